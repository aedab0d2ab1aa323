"""Fixtures: tiny local datasets built by tools/make_datasets.py from the committed behavior
checkpoints, in a temporary MINARI_DATASETS_PATH (never the user's own).  Helpers: a script's command line run in
this process (run_script), the trainer contract's shared checks."""

import contextlib
import importlib
import io
import os
import signal
import subprocess
import sys
import warnings

import pytest

os.environ.setdefault("WANDB_SILENT", "true")

TINY = 2_000  # transitions per tiny dataset


@pytest.fixture(scope="session")
def minari_root(tmp_path_factory):
    """A Minari root with local/pendulum/{medium,medium-replay,expert}-v0 of TINY transitions."""
    from tools import make_datasets

    root = tmp_path_factory.mktemp("minari")
    saved = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    code = make_datasets.main(["--envs", "pendulum", "--kinds", "medium", "medium-replay", "expert",
                               "--size", str(TINY), "--table", ""])
    assert code == 0
    yield root
    if saved is None:
        os.environ.pop("MINARI_DATASETS_PATH", None)
    else:
        os.environ["MINARI_DATASETS_PATH"] = saved


@pytest.fixture(scope="session", autouse=True)
def field_help_read_once():
    """pyrallis reads a field's help (its comment) anew for every field of every parse, through inspect.getsource,
    which parses the whole script each time: about 1 s of CPU per command line of a script.  The scripts do not
    change during a session: what it read is kept, by (config class, field)."""
    import pyrallis.wrappers.docstring as docstring

    read, found = docstring.get_attribute_docstring, {}

    def field_help(config_class, field):
        if (config_class, field) not in found:
            found[config_class, field] = read(config_class, field)
        return found[config_class, field]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(docstring, "get_attribute_docstring", field_help)
        yield


def run_script(algo: str, *args: str, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    """`python algorithms/<algo>.py *args` run in this process, for tests whose subject is the script, not a process
    (tests/test_scripts.py checks that every script's __main__ block is exactly the call made here): the same command
    line (sys.argv), environment, working directory and single torch thread, torch.compile's caches empty as in a new
    process (and emptied after), warnings shown on stderr as a fresh interpreter shows them, the exit status the
    interpreter makes of a SystemExit (none: 0, a number: itself, text: printed on stderr, 1), and the signal handlers
    fit() installs put back after.  Any other exception propagates where a process would print a traceback: a test
    expecting one sentence fails all the same."""
    import torch

    module = importlib.import_module(algo)
    stdout, stderr, code = io.StringIO(), io.StringIO(), 0
    handlers, threads = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}, torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch, warnings.catch_warnings(), contextlib.redirect_stdout(stdout), \
            contextlib.redirect_stderr(stderr):
        patch.setattr(sys, "argv", [module.__file__, *args])
        for key, value in (env or {}).items():
            patch.setenv(key, value)
        if cwd is not None:
            patch.chdir(cwd)
        fresh_interpreter_warnings(module.__name__)
        torch.set_num_threads(1)
        torch.compiler.reset()  # code compiled by earlier tests (dt's tensor lr in Adam) changes what dynamo traces
        try:
            module.train(module.parse_config(module.TrainConfig))
        except SystemExit as stop:
            code = stop.code
            if code is not None and not isinstance(code, int):
                print(code, file=sys.stderr)
                code = 1
        finally:
            torch.compiler.reset()
            torch.set_num_threads(threads)
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
    return subprocess.CompletedProcess(["python", module.__file__, *args], code or 0, stdout.getvalue(),
                                       stderr.getvalue())


def fresh_interpreter_warnings(main: str) -> None:
    """Python's own warning filters, with `main` in the place of __main__, and warnings printed on sys.stderr (pytest
    would record them instead); inside warnings.catch_warnings(), which restores pytest's."""
    warnings.resetwarnings()
    for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
        warnings.simplefilter("ignore", category)
    warnings.filterwarnings("default", category=DeprecationWarning, module=main)
    warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: sys.stderr.write(
        warnings.formatwarning(message, category, filename, lineno, line))


def tensors_of(state, path="state"):
    """(path, tensor) pairs of a nested state dict (the contract's trainer.state_dict())."""
    import torch

    if isinstance(state, torch.Tensor):
        yield path, state
    elif isinstance(state, dict):
        for key, value in state.items():
            yield from tensors_of(value, f"{path}.{key}")
    elif isinstance(state, (list, tuple)):
        for i, value in enumerate(state):
            yield from tensors_of(value, f"{path}[{i}]")


def two_updates_then_a_copy(make_trainer, sample):
    """A trainer after two updates (steps 1, 2) and a fresh one loaded with its state as fit() resumes a checkpoint
    (torch.save, then torch.load with weights_only=True): make_trainer() builds a trainer, sample(trainer) draws one
    batch."""
    import torch

    a, b = make_trainer(), make_trainer()
    for step in (1, 2):
        a.update(sample(a), step)
    saved = io.BytesIO()
    torch.save(a.state_dict(), saved)
    saved.seek(0)
    b.load_state_dict(torch.load(saved, weights_only=True))
    return a, b


def assert_compiled_matches_eager(make_trainer, sample, steps: int = 3, rtol: float = 1e-4, atol: float = 1e-5):
    """The contract's update, under torch.compile as fit() applies it (graph breaks allowed), matches eager
    on the same seed and batches: every returned metric and every tensor of state_dict() after `steps`
    updates (update(batch, step) with step = 1, 2, ...).  make_trainer() builds a fresh trainer;
    sample(trainer) draws one batch (seeded here)."""
    import torch
    import torch._dynamo
    import torch._inductor.config

    torch._dynamo.reset()
    saved = torch._inductor.config.fallback_random
    torch._inductor.config.fallback_random = True  # inductor draws eager's random numbers, not its own
    try:
        torch.manual_seed(0)
        eager = make_trainer()
        torch.manual_seed(0)
        compiled = make_trainer()
        update = torch.compile(compiled.update)
        for step in range(1, steps + 1):
            torch.manual_seed(100 + step)
            batch = sample(eager)
            torch.manual_seed(200 + step)
            metrics_eager = eager.update(batch, step)
            torch.manual_seed(200 + step)
            metrics_compiled = update(batch, step)
            assert metrics_eager.keys() == metrics_compiled.keys()
            for key in metrics_eager:
                assert torch.allclose(metrics_eager[key], metrics_compiled[key], rtol=rtol, atol=atol), key
        compiled_state = dict(tensors_of(compiled.state_dict()))
        for path, tensor in tensors_of(eager.state_dict()):
            if tensor.is_floating_point():
                assert torch.allclose(tensor, compiled_state[path], rtol=rtol, atol=atol), path
            else:
                assert torch.equal(tensor, compiled_state[path]), path
    finally:
        torch._inductor.config.fallback_random = saved


def assert_export_matches_policy(module, trainer, state_dim: int, tmp_path, seed: int = 0):
    """policy.pt2 written by the script's export_policy, loaded with torch alone, gives the trainer's own
    deterministic actions (trainer.policy() on normalized states) on the same raw observations."""
    import numpy as np
    import torch

    rng = np.random.default_rng(seed)
    mean = rng.normal(size=state_dim).astype(np.float32)
    std = rng.uniform(0.5, 2.0, size=state_dim).astype(np.float32)
    path = tmp_path / "policy.pt2"
    module.export_policy(path, trainer.policy(), mean, std)
    program = torch.export.load(path).module()
    for batch in (1, 7):
        raw = torch.as_tensor(rng.normal(size=(batch, state_dim)).astype(np.float32))
        with torch.no_grad():
            torch.manual_seed(seed)
            own = trainer.policy()((raw.to(trainer.device) - torch.as_tensor(mean, device=trainer.device))
                                   / torch.as_tensor(std, device=trainer.device)).cpu()
            torch.manual_seed(seed)
            exported = program(raw)
        assert exported.shape == own.shape
        assert torch.allclose(exported, own, rtol=1e-5, atol=1e-6)
