"""The shared runtime pieces: atomic files, Ctrl-C in loops, worker processes that leave Ctrl-C to the main process,
RNG states (CPU and, simulated here, CUDA), precision and the global-batch check."""

from __future__ import annotations

import os
import signal

import pytest
import torch

from orand_addon.runtime import devices, workers
from orand_addon.runtime.distributed import DistInfo, any_rank, rank_batch
from orand_addon.errors import Interrupted, OrandError
from orand_addon.runtime.interrupts import StopRequest, deferred_interrupt
from orand_addon.runtime.files import atomic_save, atomic_write
from orand_addon.runtime.seeding import rng_state, set_rng_state
from orand_addon.runtime.workers import worker_pool


def _sigint_disposition(_: int) -> bool:
    return signal.getsignal(signal.SIGINT) == signal.SIG_IGN


def _remember(path: str, value: str) -> None:
    with open(path, "a") as fh:
        fh.write(f"{os.getpid()} {value}\n")


def test_atomic_save_leaves_no_temporary_file_whatever_interrupts_it(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    atomic_save({"step": 1}, path)
    real = torch.save

    def interrupted_save(obj, fh, *args, **kwargs):
        real(obj, fh, *args, **kwargs)  # half of the work is done: the temporary file exists
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        atomic_save({"step": 2}, path)
    monkeypatch.setattr(torch, "save", real)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
    assert torch.load(path, weights_only=True) == {"step": 1}


def test_atomic_write_turns_a_failed_write_into_one_line_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "out.txt"
    atomic_write(path, lambda fh: fh.write(b"old"))

    def full_disk(fh):
        fh.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OrandError) as info:
        atomic_write(path, full_disk, what="results file")
    assert str(info.value) == (f"{path}: writing the results file failed (No space left on device); the previous "
                               f"file is unchanged")
    assert path.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
    (tmp_path / "blocker").write_text("a file, not a folder")
    with pytest.raises(OrandError, match=r"blocker/x.txt: cannot write file \("):
        atomic_write(tmp_path / "blocker" / "x.txt", lambda fh: fh.write(b"x"))


def test_a_step_holds_ctrl_c_and_a_second_one_outside_a_step_interrupts():
    with StopRequest() as stop:
        with stop.step():
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)  # a second Ctrl-C inside a step waits for its end
            finished = True
        assert finished and stop.requested
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # between steps: at once
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with StopRequest(repeat_interrupts=False) as stop:  # torchrun: every further Ctrl-C is ignored
        for _ in range(3):
            os.kill(os.getpid(), signal.SIGINT)
    assert stop.requested
    with deferred_interrupt() as flag:
        pass
    assert not flag.requested


def test_worker_pool_is_not_forked_and_its_workers_ignore_ctrl_c(tmp_path):
    log = tmp_path / "init.txt"
    with worker_pool(2, _remember, (str(log), "ready")) as pool:
        assert all(pool.map(_sigint_disposition, range(4)))
        pids = set(pool.map(_getpid, range(8)))
        assert pool._ctx.get_start_method() in ("forkserver", "spawn")
    lines = log.read_text().splitlines()
    assert all(line.endswith(" ready") for line in lines)
    assert pids <= {int(line.split()[0]) for line in lines}  # every worker that ran a task was initialised
    assert os.getpid() not in pids


def _getpid(_: int) -> int:
    return os.getpid()


def test_ignore_sigint_is_what_every_loader_and_pool_worker_runs():
    from orand_addon.orandnet import data as orandnet_data

    previous = signal.getsignal(signal.SIGINT)
    try:
        workers.ignore_sigint(3)  # a DataLoader passes the worker id
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
    assert orandnet_data.ignore_sigint is workers.ignore_sigint


def test_rng_state_round_trips_the_cpu_generator_and_the_gpus_when_cuda_is_in_use(monkeypatch):
    saved = rng_state()
    first = torch.rand(3)
    set_rng_state(saved)
    assert torch.equal(torch.rand(3), first)
    assert saved["cuda"] == [] or torch.cuda.is_initialized()

    gpu_states = [torch.tensor([1, 2], dtype=torch.uint8), torch.tensor([3, 4], dtype=torch.uint8)]
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: gpu_states)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.append)
    state = rng_state()
    assert state["cuda"] is gpu_states
    set_rng_state(state)
    assert restored == [gpu_states]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # moved to a machine with another GPU count
    set_rng_state(state)
    assert len(restored) == 1
    set_rng_state({"torch": state["torch"]})  # a checkpoint of a CPU run (no GPU states)
    assert len(restored) == 1


def test_precision_is_resolved_and_checked_in_one_place(monkeypatch):
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert [devices.resolve_precision(cpu, p) for p in devices.PRECISIONS] == ["fp32"] * 4
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert [devices.resolve_precision(gpu, p) for p in devices.PRECISIONS] == ["fp16", "fp16", "fp16", "fp32"]
    assert not devices.grad_scaler("fp32").is_enabled() and not devices.grad_scaler("bf16").is_enabled()
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert [devices.resolve_precision(gpu, p) for p in devices.PRECISIONS] == ["bf16", "bf16", "fp16", "fp32"]
    with pytest.raises(OrandError, match=r"^unknown precision 'half'; valid: auto, bf16, fp16, fp32$"):
        devices.resolve_precision(cpu, "half")
    from orand_addon.cli import predict, refine, seg, train

    for command in (refine.refine, seg.train_seg, seg.segment, train.train, predict.predict):
        option = next(p for p in command.params if p.name == "precision")
        assert tuple(option.type.choices) == devices.PRECISIONS, command.name


def test_global_batch_check_and_stop_agreement_without_a_process_group():
    assert [rank_batch(12, w) for w in (1, 2, 3, 4)] == [12, 6, 4, 3]
    with pytest.raises(OrandError, match=r"^--batch-size 3 is the global batch and must be a multiple of the 2 "
                                         r"processes \(WORLD_SIZE=2\); use --batch-size 2 or 4$"):
        rank_batch(3, 2)
    with pytest.raises(OrandError, match=r"use --batch-size 4$"):
        rank_batch(3, 4)
    assert any_rank(True, DistInfo(), torch.device("cpu")) and not any_rank(False, DistInfo(), torch.device("cpu"))
    assert issubclass(Interrupted, OrandError) and Interrupted.exit_code == 130


class _CtrlCInWorkers(torch.utils.data.Dataset):
    """Items 0..n-1 (by int or ``(epoch, index)`` key); reading one in a worker process presses Ctrl-C there, as a
    terminal does for its whole process group."""

    def __init__(self, n: int):
        self.n, self.main = n, os.getpid()

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key):
        index = key[1] if isinstance(key, tuple) else key
        if os.getpid() != self.main:
            os.kill(os.getpid(), signal.SIGINT)
        return torch.tensor([index])


def _loaders(dataset):
    from orand_addon.refine.train import TrainOptions, build_loader
    from orand_addon.orandnet.data import IterationSampler, make_loader as orandnet_loader
    from orand_addon.segment.train import SegTrainConfig, make_loader as seg_loader

    seg = SegTrainConfig(images="i", masks="m", train_list=[], out="o", batch_size=2, workers=2)
    yield "train-seg", seg_loader(seg, dataset, epoch=0, start_batch=0)
    yield "refine", build_loader(dataset, TrainOptions(batch_size=2), 0, 3, workers=2, pin_memory=False)
    yield "train", orandnet_loader(dataset, IterationSampler(len(dataset), 0, 0, 6), workers=2, pin_memory=False)


def test_every_training_loader_leaves_ctrl_c_to_the_main_process():
    """Ctrl-C reaches the loader's workers too; they must not die of it (the main process would report "DataLoader
    worker exited unexpectedly" with a traceback instead of saving a checkpoint)."""
    dataset = _CtrlCInWorkers(6)
    for name, loader in _loaders(dataset):
        items = [int(v) for batch in loader for v in torch.as_tensor(batch).reshape(-1)]
        assert sorted(items) == list(range(6)), name
