"""Benchmark: .mle vs safetensors (numpy API), torch.save/torch.load and pickle.

For a ~100 MB model (25 M float32 parameters in 50 tensors) and a digits-sized MLP (64-128-10): save time, open
time (memory-map + parse header and table), time to read every tensor once (every byte touched: a sum over
each tensor), and file size. Then the size of an int8 delta and of a top-1% sparse delta relative to raw
float32. Each figure is the median of several runs; files live in a temp dir (page cache warm, as when a
coordinator re-reads its own checkpoint). .mle save is atomic and durable (temp file, fsync, rename);
the peers neither rename nor fsync. The ".mle plain" row saves like the peers (``write_stream`` into an open
file, no rename, no fsync) and reads with ``verify_crc=False`` (what a reader does after verifying the
signature, which already covers every byte, or when it trusts its own disk): the per-tensor CRC32 check
is the one cost the peers don't pay. Last, the throughput of bit-packed field elements (``field_packed``, what a
SecAgg+ masked input of d = 101,770 – the digits CNN's parameters + 1 – travels as when m is not 16 or 32), with
numpy and with the pure-Python packer the browser falls back to. Run: `.venv-bench/bin/python
benchmarks/bench_mle.py` (`--packed`: only that last part).
"""

from __future__ import annotations

import os
import pickle
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import mle

try:
    import safetensors.numpy as st_np
    from safetensors import safe_open
except ImportError:  # pragma: no cover - the benchmark environment installs it
    sys.exit("safetensors is not installed: run `bash benchmarks/setup_env.sh` and use .venv-bench/bin/python")
import torch

torch.set_num_threads(1)


def timeit(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def big_model() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    tensors: dict[str, np.ndarray] = {}
    for i in range(25):
        tensors[f"layer{i}.weight"] = rng.standard_normal((1000, 1000), dtype=np.float32)
        tensors[f"layer{i}.bias"] = rng.standard_normal(1000, dtype=np.float32)
    return tensors


def mlp_model() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {
        "0.weight": rng.standard_normal((128, 64), dtype=np.float32), "0.bias": np.zeros(128, np.float32),
        "2.weight": rng.standard_normal((10, 128), dtype=np.float32), "2.bias": np.zeros(10, np.float32),
    }


def touch_all(arrays: object) -> float:
    """Touch every byte once (a reduction over each tensor), so lazy formats pay their read cost."""
    return float(sum(float(np.add.reduce(a, axis=None)) for a in arrays))  # type: ignore[union-attr]


def bench_formats(name: str, tensors: dict[str, np.ndarray], tmp: Path, repeats: int) -> list[tuple]:
    rows = []
    torch_tensors = {k: torch.from_numpy(v) for k, v in tensors.items()}

    p = tmp / f"{name}.mle"
    save = timeit(lambda: mle.save(p, tensors), repeats)
    opened = timeit(lambda: mle.load(p), repeats * 4)

    def read_mle() -> None:
        f = mle.load(p)
        touch_all(f[n] for n in f.tensor_names)  # includes each tensor's CRC32 check (first access)

    rows.append((".mle", save, opened, timeit(read_mle, repeats), os.path.getsize(p)))

    def save_plain() -> None:  # like the peers: no temp file, no fsync
        with open(p, "wb") as f:
            mle.write_stream(f, tensors)

    def read_mle_nocrc() -> None:
        f = mle.load(p, verify_crc=False)
        touch_all(f[n] for n in f.tensor_names)

    rows.append((".mle plain", timeit(save_plain, repeats), opened, timeit(read_mle_nocrc, repeats),
                 os.path.getsize(p)))

    p = tmp / f"{name}.safetensors"
    save = timeit(lambda: st_np.save_file(tensors, str(p)), repeats)
    opened = timeit(lambda: safe_open(str(p), framework="numpy").keys(), repeats * 4)

    def read_st() -> None:
        with safe_open(str(p), framework="numpy") as f:
            touch_all(f.get_tensor(k) for k in f.keys())  # noqa: SIM118 - safe_open has no __iter__

    rows.append(("safetensors", save, opened, timeit(read_st, repeats), os.path.getsize(p)))

    p = tmp / f"{name}.pt"
    save = timeit(lambda: torch.save(torch_tensors, p), repeats)
    opened = timeit(lambda: torch.load(p, mmap=True, weights_only=True), repeats * 4)
    rows.append(("torch (mmap)", save, opened,
                 timeit(lambda: touch_all(t.numpy() for t in torch.load(p, mmap=True, weights_only=True).values()),
                        repeats), os.path.getsize(p)))

    p = tmp / f"{name}.pkl"

    def save_pickle() -> None:
        with open(p, "wb") as f:
            pickle.dump(tensors, f, protocol=5)

    def load_pickle() -> dict:
        with open(p, "rb") as f:
            return pickle.load(f)

    save = timeit(save_pickle, repeats)
    opened = timeit(load_pickle, repeats)  # pickle has no lazy open: opening is reading everything
    rows.append(("pickle", save, opened, timeit(lambda: touch_all(load_pickle().values()), repeats),
                 os.path.getsize(p)))
    return rows


def fmt_time(s: float) -> str:
    return f"{s * 1e3:9.3f} ms" if s < 10 else f"{s:9.2f} s "


def print_rows(title: str, rows: list[tuple], nbytes: int) -> None:
    ref = {r[0]: r for r in rows}["safetensors"]
    print(f"\n{title}  ({nbytes / 1e6:.1f} MB of float32)")
    print(f"{'format':<14}{'save':>13}{'×st':>7}{'open':>13}{'×st':>8}{'read all':>13}{'×st':>7}"
          f"{'GB/s':>7}{'size MB':>10}{'×st':>7}")
    for fmt, save, opened, read, size in rows:
        print(f"{fmt:<14}{fmt_time(save)}{save / ref[1]:7.2f}{fmt_time(opened)}{opened / ref[2]:8.3f}"
              f"{fmt_time(read)}{read / ref[3]:7.2f}{nbytes / read / 1e9:7.2f}{size / 1e6:10.3f}{size / ref[4]:7.3f}")


def bench_packed(d: int = 101_770, repeats: int = 15) -> None:
    """Encode (``FieldElements(..., packed=True)`` → .mle bytes, as ``encode_masked``: no range check) and decode
    (``loads(verify_crc=False)`` → ``field_values``, as ``decode_masked``) of d field elements, numpy and pure."""
    import array

    print(f"\nfield_packed, d = {d:,} (median of {repeats}; M el/s = million elements per second)")
    print(f"{'m':>3}{'packed KB':>11}{'field KB':>10}{'backend':>9}{'encode':>13}{'M el/s':>8}{'decode':>13}"
          f"{'M el/s':>8}")
    rng = np.random.default_rng(3)
    for m in (12, 16, 20):
        values = rng.integers(0, 1 << m, d, dtype=np.uint64).astype(np.uint16 if m <= 16 else np.uint32)
        plain = len(mle.dumps({"v": mle.FieldElements(values, modulus_bits=m)}))
        inputs = {"numpy": values, "pure": array.array("H" if m <= 16 else "I", values.tobytes())}
        for backend, v in inputs.items():
            def encode(v: object = v, m: int = m) -> bytes:
                return mle.dumps({"v": mle.FieldElements(v, modulus_bits=m, check=False, packed=True)})

            blob = encode()

            def decode(blob: bytes = blob, backend: str = backend) -> object:
                return mle.loads(blob, backend=backend, verify_crc=False).field_values("v")[1]

            got = decode()
            assert len(got) == d and list(got[:5]) == values[:5].tolist()
            enc, dec = timeit(encode, repeats), timeit(decode, repeats)
            print(f"{m:>3}{len(blob) / 1e3:11.1f}{plain / 1e3:10.1f}{backend:>9}{fmt_time(enc)}{d / enc / 1e6:8.1f}"
                  f"{fmt_time(dec)}{d / dec / 1e6:8.1f}")


def main() -> None:
    if "--packed" in sys.argv[1:]:
        bench_packed()
        return
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        big = big_model()
        nbig = sum(a.nbytes for a in big.values())
        print(f"model: {len(big)} tensors, {sum(a.size for a in big.values()) / 1e6:.1f} M float32 parameters")
        print_rows("100 MB model", bench_formats("big", big, tmp, repeats=5), nbig)
        mlp = mlp_model()
        print_rows("digits MLP 64-128-10", bench_formats("mlp", mlp, tmp, repeats=50),
                   sum(a.nbytes for a in mlp.values()))

        # Compact deltas of the big model (a delta looks like small Gaussian noise).
        rng = np.random.default_rng(2)
        delta = {k: (rng.standard_normal(v.shape, dtype=np.float32) * 1e-3) for k, v in big.items()}
        raw = len(mle.dumps(delta))
        t0 = time.perf_counter()
        q = mle.dumps({k: mle.quantize_int8(v, axis=0 if v.ndim > 1 else None) for k, v in delta.items()})
        tq = time.perf_counter() - t0
        t0 = time.perf_counter()
        s = mle.dumps({k: mle.sparse_topk(v, fraction=0.01) for k, v in delta.items()})
        ts = time.perf_counter() - t0
        print(f"\ndeltas of the 100 MB model (raw float32 .mle: {raw / 1e6:.1f} MB)")
        print(f"  int8 per-channel   {len(q) / 1e6:8.2f} MB  {len(q) / raw:7.2%} of raw   (goal <= 26%)  "
              f"encode {tq:.2f} s")
        print(f"  top-1% sparse f16  {len(s) / 1e6:8.2f} MB  {len(s) / raw:7.2%} of raw   (goal <= 2%)   "
              f"encode {ts:.2f} s")
    bench_packed()


if __name__ == "__main__":
    main()
