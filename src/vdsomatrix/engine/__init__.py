"""The engines: the one place where containers and guests are started, confined and removed.

    client.py     the Docker SDK client, image lookup, container removal, engine errors
    container.py  one confined container run: created, read, deadline kept, always removed
    leftovers.py  owner labels, and the sweep of containers that killed runs left behind
    seccomp.py    the containers' seccomp profile, made from the engine's own default
    accel.py      KVM or TCG for QEMU: a short KVM boot decides, remembered per host boot
    workdirs.py   work folders named by their owner process, so leftovers of dead runs go
"""
