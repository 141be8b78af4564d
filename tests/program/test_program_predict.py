"""predict() from real programs' facts and real result documents; disagreement() of each kind."""

from __future__ import annotations

import os
import subprocess

import program_docs as docs
import pytest
from program_builds import i386_exit0
from program_fixtures import *  # noqa: F403 (the programs built here)

from vdsomatrix.program.elf import analyse_program, read_program
from vdsomatrix.program.predict import Prediction, disagreement, predict
from vdsomatrix.program.verdict import RunOutcome, Verdict, judge


def facts_of(path):
    return analyse_program(read_program(path), path.name)


def test_vsyscall_caller_crashes_under_none_and_runs_under_xonly(vsyscall_static):
    facts = facts_of(vsyscall_static)
    crash = predict(facts, docs.bookworm_none())
    assert (crash.kind, crash.signal, crash.fault_address) == (
        "crashed", "SIGSEGV", "0xffffffffff600400")
    assert crash.reason.startswith("SIGSEGV at 0xffffffffff600400") and "vsyscall=none" in \
        crash.reason
    assert predict(facts, docs.bookworm_xonly()).kind == "passed"
    assert predict(facts, docs.musl_build()).kind == "passed"  # static: no libc facts needed
    unknown = predict(facts, docs.without(docs.bookworm_xonly(), "vsyscall", "mode"))
    assert unknown.kind == "unknown" and unknown.missing_facts == ("vsyscall.mode",)


def test_vsyscall_pointer_alone_is_not_predicted_to_crash(vsyscall_pointer):
    assert predict(facts_of(vsyscall_pointer), docs.bookworm_none()).kind == "passed"


def test_glibc_2_34_program_on_glibc_2_31_is_a_loader_error(glibc_dynamic):
    facts = facts_of(glibc_dynamic)
    old = predict(facts, docs.bullseye_dynamic())
    assert (old.kind, old.missing) == ("loader-error", "GLIBC_2.34")
    assert old.reason == "needs symbol version GLIBC_2.34; the userland has glibc 2.31"
    assert predict(facts, docs.bookworm_xonly()).kind == "passed"  # 2.36 >= 2.34


def test_glibc_program_where_the_userland_glibc_is_not_in_the_document(glibc_dynamic):
    # a musl build's document describes the probe's musl, not the userland's glibc
    prediction = predict(facts_of(glibc_dynamic),
                         docs.with_interpreters(docs.musl_build(),
                                                "/lib64/ld-linux-x86-64.so.2"))
    assert prediction.kind == "unknown"
    assert "musl probe" in prediction.reason
    assert prediction.missing_facts == ("environment.libc.version of a dynamic build",)


def test_musl_dynamic_program(musl_dynamic):
    facts = facts_of(musl_dynamic)
    glibc_only = docs.with_interpreters(docs.bookworm_xonly(), "/lib64/ld-linux-x86-64.so.2")
    missing = predict(facts, glibc_only)
    assert (missing.kind, missing.missing) == ("cannot-execute", "/lib/ld-musl-x86_64.so.1")
    with_musl = docs.with_interpreters(docs.bookworm_xonly(), "/lib64/ld-linux-x86-64.so.2",
                                       "/lib/ld-musl-x86_64.so.1")
    assert predict(facts, with_musl).kind == "passed"
    unrecorded = predict(facts, docs.bookworm_xonly())
    assert unrecorded.kind == "unknown"
    assert unrecorded.missing_facts == ("environment.interpreters",)


def test_foreign_architectures(arm64_static, glibc_dynamic):
    arm = facts_of(arm64_static)
    on_x86 = predict(arm, docs.bookworm_xonly())
    assert on_x86.kind == "cannot-execute" and "an aarch64 program on an x86_64 kernel" in \
        on_x86.reason
    assert predict(arm, docs.arm64()).kind == "passed"
    assert predict(facts_of(glibc_dynamic), docs.arm64()).kind == "cannot-execute"


def test_i386_program_and_ia32_emulation():
    facts = analyse_program(i386_exit0(), "exit0")
    off = predict(facts, docs.with_ia32(docs.bookworm_xonly(), False))
    assert off.kind == "cannot-execute" and "32-bit" in off.reason
    assert predict(facts, docs.with_ia32(docs.bookworm_xonly(), True)).kind == "passed"
    unknown = predict(facts, docs.with_ia32(docs.bookworm_xonly(), None))
    assert unknown.missing_facts == ("environment.ia32",)
    assert predict(facts, docs.i386_userland()).kind == "passed"  # the probe itself was i386


def test_x86_64_glibc_program_in_an_i386_userland(glibc_dynamic):
    prediction = predict(facts_of(glibc_dynamic), docs.i386_userland())
    assert prediction.kind == "cannot-execute"
    assert prediction.missing == "/lib64/ld-linux-x86-64.so.2"


def test_cxx_and_other_libraries_are_unknown_not_guessed(cxx_dynamic, libfoo_programs):
    cxx = predict(facts_of(cxx_dynamic), docs.bookworm_xonly())
    assert cxx.kind == "unknown" and "libstdc++" in cxx.reason
    foo = predict(facts_of(libfoo_programs["glibc"]), docs.bookworm_xonly())
    assert foo.kind == "unknown" and "libfoo.so.1" in foo.reason


def test_go_and_static_programs_pass_on_x86_64(go_binary, musl_static, static_pie):
    for path in (go_binary, musl_static, static_pie):
        prediction = predict(facts_of(path), docs.bookworm_none())
        assert prediction.kind == "passed", path.name
        assert prediction.label == "prediction"


def test_scripts_and_non_programs():
    script = analyse_program(b"#!/bin/sh\nexit 0\n", "run.sh")
    assert predict(script, docs.bookworm_xonly()).missing_facts == ("environment.interpreters",)
    assert predict(script, docs.with_interpreters(docs.bookworm_xonly(), "/bin/sh")).kind == \
        "passed"
    assert predict(script, docs.with_interpreters(docs.bookworm_xonly())).missing == "/bin/sh"
    assert predict(analyse_program(b"", "empty"), docs.bookworm_xonly()).kind == \
        "cannot-execute"


def test_missing_kernel_machine_is_named():
    doc = docs.without(docs.bookworm_xonly(), "environment", "kernel")
    prediction = predict(analyse_program(i386_exit0(), "x"), doc)
    assert prediction.missing_facts == ("environment.kernel.machine",)


# -- disagreement, one test per kind ----------------------------------------------------------

PASSES = Prediction("passed", "x86_64 static program on an x86_64 kernel")
CRASHES = Prediction("crashed", "SIGSEGV at 0xffffffffff600400: calls the vsyscall page",
                     signal="SIGSEGV", fault_address="0xffffffffff600400")
OLD_GLIBC = Prediction("loader-error", "needs GLIBC_2.34", missing="GLIBC_2.34")


def test_agreement_is_none():
    assert disagreement(PASSES, Verdict("passed", "exited with status 0")) is None
    same_page = Verdict("crashed", "…", signal="SIGSEGV", fault_address="0xffffffffff600400")
    assert disagreement(CRASHES, same_page) is None


def test_unknown_claims_nothing():
    assert disagreement(Prediction("unknown", "?"), Verdict("crashed", "SIGSEGV")) is None


def test_predicted_to_run_but_it_did_not():
    text = disagreement(PASSES, Verdict("crashed", "SIGSEGV at 0x0: a null pointer dereference"))
    assert text == ("predicted to run, but crashed: SIGSEGV at 0x0: a null pointer "
                    "dereference")


def test_predicted_to_fail_but_it_passed():
    text = disagreement(CRASHES, Verdict("passed", "exited with status 0"))
    assert text.startswith("predicted crashed (SIGSEGV at 0xffffffffff600400") and \
        text.endswith("but it ran and passed")


def test_predicted_one_failure_but_another():
    text = disagreement(OLD_GLIBC, Verdict("cannot-execute", "missing interpreter /lib64/x"))
    assert text == ("predicted loader-error (needs GLIBC_2.34), but cannot-execute: missing "
                    "interpreter /lib64/x")


def test_same_kind_different_missing_thing():
    text = disagreement(OLD_GLIBC, Verdict("loader-error", "missing library libfoo.so.1",
                                           missing="libfoo.so.1"))
    assert text.endswith("but with missing libfoo.so.1, not GLIBC_2.34")


def test_same_kind_different_signal_or_address():
    other_signal = Verdict("crashed", "SIGILL", signal="SIGILL", fault_address="0x401000")
    assert disagreement(CRASHES, other_signal).endswith("with signal SIGILL, not SIGSEGV")
    elsewhere = Verdict("crashed", "SIGSEGV at 0x10", signal="SIGSEGV", fault_address="0x10")
    assert disagreement(CRASHES, elsewhere).endswith(
        "with fault at 0x10, not 0xffffffffff600400")


def test_missing_interpreter_agrees_through_a_symlinked_path():
    predicted = Prediction("cannot-execute", "missing", missing="/lib/ld-musl-x86_64.so.1")
    observed = Verdict("cannot-execute", "missing", missing="/lib/ld-musl-x86_64.so.1")
    assert disagreement(predicted, observed) is None


def test_foreign_binary_run_by_binfmt_misc_is_a_real_disagreement(arm64_static):
    """This host registers qemu-aarch64 with binfmt_misc: the kernel runs an aarch64 program
    the prediction (which knows nothing of binfmt_misc) says cannot execute."""
    handler = "/proc/sys/fs/binfmt_misc/qemu-aarch64"
    if not os.path.exists(handler) or "enabled" not in open(handler).read():
        pytest.skip("no binfmt_misc handler for aarch64 here")
    prediction = predict(facts_of(arm64_static), docs.bookworm_xonly())
    done = subprocess.run([str(arm64_static)], capture_output=True, timeout=120)
    verdict = judge(RunOutcome(exit_status=done.returncode, stderr=done.stderr))
    assert (prediction.kind, verdict.kind) == ("cannot-execute", "passed")
    assert "binfmt_misc" in disagreement(prediction, verdict)
