"""A user's own program across the matrix (issue 24): the pure host-side half,

- :mod:`.elf`: what the program is, read from its bytes on the host (``analyse_program``);
- :mod:`.verdict`: what happened when it ran in one environment (``judge``);
- :mod:`.predict`: what should happen there, from the two sets of facts (``predict``), and
  whether the run disagrees with that (``disagreement``).

and `vdsomatrix test`, which runs it and calls those three with what it saw:

- :mod:`.containers`: the program staged read-only and run under the image's launcher in an
  engine.Container with the probe's confinement (containers only, for now);
- :mod:`.testing`: the environments chosen, prepared and run, each judged and predicted;
- :mod:`.summary`: the Markdown table, the ``vdsomatrix-test/1`` document and the exit code.
"""
