"""Print the installed packages that only building the helper needs, one per line.

Run by images/Dockerfile inside a suite's image, with the suite's own python3 (3.9 at the oldest,
standard library only), after the helper is built: dpkg then purges what this prints, so the
measured image holds the probe, python3 and the libcs, and no compiler.

What is kept: every Essential or Priority: required package, python3, musl, and all they depend
on (Depends and Pre-Depends, every installed alternative, virtual packages through Provides).
Everything else installed was installed only for the build (gcc, libc6-dev, musl-tools and their
dependencies). dpkg itself refuses to purge a package something kept still depends on, so a
mistake here fails the image build instead of leaving a broken image.
"""

import re
import sys

STATUS = "/var/lib/dpkg/status"
# python3 runs the probe; musl is the musl build's libc package, kept (1 MB, no compiler) because
# the probe reads the version of the musl it was linked against from dpkg.
RUN_TIME_ROOTS = ("python3", "musl")


def paragraphs(text):
    for block in text.split("\n\n"):
        fields, key = {}, None
        for line in block.splitlines():
            if line[:1] in (" ", "\t") and key:
                fields[key] += "\n" + line
            elif ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if fields.get("Package"):
            yield fields


def dependency_names(fields):
    """Every package name a package's Depends and Pre-Depends mention (all alternatives)."""
    names = []
    for field in ("Pre-Depends", "Depends"):
        for clause in fields.get(field, "").split(","):
            for alternative in clause.split("|"):
                name = re.sub(r"[\s(\[<].*", "", alternative.strip(), flags=re.S)
                names.append(name.split(":")[0])
    return [n for n in names if n]


def main():
    with open(STATUS, encoding="utf-8") as f:
        installed = {p["Package"]: p for p in paragraphs(f.read())
                     if p.get("Status", "").endswith(" installed")}
    providers = {}
    for name, fields in installed.items():
        for provided in fields.get("Provides", "").split(","):
            provided = re.sub(r"[\s(].*", "", provided.strip(), flags=re.S)
            if provided:
                providers.setdefault(provided, []).append(name)
    keep = set()
    todo = [n for n, p in installed.items()
            if p.get("Essential") == "yes" or p.get("Priority") == "required"]
    todo.extend(n for n in RUN_TIME_ROOTS if n in installed)
    while todo:
        name = todo.pop()
        if name in keep:
            continue
        keep.add(name)
        for dep in dependency_names(installed[name]):
            todo.extend(d for d in [dep, *providers.get(dep, [])] if d in installed)
    for name in sorted(set(installed) - keep):
        print(name)


if __name__ == "__main__":
    sys.exit(main())
