"""A user's own program across the matrix (issue 24), the pure host-side half.

- :mod:`.elf`: what the program is, read from its bytes on the host (``analyse_program``);
- :mod:`.verdict`: what happened when it ran in one environment (``judge``);
- :mod:`.predict`: what should happen there, from the two sets of facts (``predict``), and
  whether the run disagrees with that (``disagreement``).

Nothing here runs the program: the runner that starts it inside containers and guests calls
these functions with what it saw.
"""
