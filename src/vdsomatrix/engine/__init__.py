"""The engines: the one place where containers and guests are started, confined and removed.

Two primitives, each a class with a context-managed lifecycle; every payload goes through one
of them, so confinement, deadlines, bounded output and leftovers sweeps exist once:

    container.py  Container: created confined (a Confinement, explicit), files copied in and
                  out, run with a deadline, output bounded, always removed; run_container
    guest.py      Guest: QEMU booted from a backend's command line in an owned work folder,
                  result port and console read bounded, deadline, always reaped
    frame.py      the result frame a guest writes to its result port, and its parser

and what they stand on:

    client.py     the Docker SDK client, image lookup, container removal, engine errors
    leftovers.py  owner labels, and the sweep of containers that killed runs left behind
    seccomp.py    the containers' seccomp profile, made from the engine's own default
    accel.py      KVM or TCG for QEMU: a short KVM boot (a Guest) decides, remembered per boot
    workdirs.py   work folders named by their owner process, so leftovers of dead runs go
"""
