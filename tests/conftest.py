"""Shared test set-up: a fresh random seed per test (printed, so a failure can be rerun
with SEQOPS_TEST_SEED), the `cuda` marker skipping cleanly without a GPU, the CUDA
C++ backend's missing ops skipped where tests run every backend, and torch's CPU threads
shared out between pytest-xdist's workers; run_guard's watchdog for unattended runs."""
import fnmatch
import os
import random

import pytest
import torch

try:  # beside this file; a copy of it elsewhere (tests that run pytest on one) goes without
    import run_guard
except ImportError:
    run_guard = None


def pytest_configure(config):
    if run_guard is not None and not config.pluginmanager.is_registered(run_guard):
        config.pluginmanager.register(run_guard, "run_guard")
    # Under pytest-xdist (README's test command runs `-n auto`), each worker is a process of
    # its own: left alone, every one would start a torch thread per core and they would fight
    # over the cores. Give each worker its share instead.
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


def pytest_addoption(parser):
    parser.addoption("--tests-first", default="", metavar="GLOBS",
                     help="comma-separated globs of test file names whose tests run before the others "
                          "(benchmarks/gpu_check --quick: the kernels that have never run on a GPU)")
    parser.addoption("--list-randomised", default="", metavar="PATH",
                     help="append to PATH the node id of each test that draws from torch's default generator: "
                          "the tests whose outcome can depend on SEQOPS_TEST_SEED (a seed sweep runs "
                          "`pytest @PATH`; the others give the same result at every seed)")


def pytest_collection_modifyitems(config, items):
    first = [glob for glob in config.getoption("--tests-first").split(",") if glob]

    def rank(item):  # the first glob its file matches
        return next((i for i, glob in enumerate(first) if fnmatch.fnmatch(item.path.name, glob)), len(first))

    if first:  # a stable sort: the same order in every pytest-xdist worker
        items.sort(key=rank)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def fresh_seed(request):
    seed = int(os.environ.get("SEQOPS_TEST_SEED") or random.SystemRandom().randrange(2**31))
    torch.manual_seed(seed)
    seeded = torch.random.get_rng_state()
    print(f"torch seed {seed} (rerun with SEQOPS_TEST_SEED={seed})")
    yield seed
    listing = request.config.getoption("--list-randomised")
    if listing and not torch.equal(torch.random.get_rng_state(), seeded):
        with open(listing, "a") as out:  # one short line per write: whole lines from every xdist worker
            out.write(command_line_id(request.node.nodeid) + "\n")


def command_line_id(nodeid: str) -> str:
    """A test's node id as the command line names it: without the "@group" that
    pytest-xdist's --dist loadgroup appends to the ids of grouped tests."""
    head, bracket, params = nodeid.partition("[")
    if bracket:
        params, _, _ = params.rpartition("]")
        return f"{head}[{params}]"
    return head.partition("@")[0]


# The CUDA C++ backend implements some ops, and some only in part, so far: on a GPU, a test
# parametrised over every backend that reaches an op it lacks, or a feature its supports()
# refuses as not written yet (seqops.backends.cuda_attention.NOT_YET), skips, saying so,
# instead of failing. Only those exact refusals, and only for this backend, so that a
# backend losing an op it had still fails.
CUDA_LACKS_OP = "backend 'cuda' has no implementation of"
CUDA_LACKS_FEATURE = ("backend 'cuda' cannot run this call", "not in the CUDA backend yet")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if call.when != "call" or call.excinfo is None:
        return
    from seqops import BackendUnavailable

    message = str(call.excinfo.value)
    lacks = CUDA_LACKS_OP in message or all(part in message for part in CUDA_LACKS_FEATURE)
    if call.excinfo.errisinstance(BackendUnavailable) and lacks:
        report.outcome = "skipped"
        report.longrepr = (str(item.path), item.location[1], f"Skipped: {call.excinfo.value}")
