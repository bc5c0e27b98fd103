"""Stage benchmark: CPU size, batch-1 latency and batch throughput of every artifact, measured in
one interleaved run against FP32 eager PyTorch, after checking that all of them agree."""

from gclf.bench import benchmark, check_agreement, machine_facts
from gclf.cli import run_stage
from gclf.data import load_split
from gclf.io import write_json
from gclf.plots import benchmark_png
from gclf.quantize import ARTIFACTS, artifact_size_mb, compiled_torch_runner, load_runner, openvino_runner

FP32_ATOL = 1e-3  # FP32 runtimes: float reordering only
INT8_MIN_CORRELATION = 0.8  # INT8: logits move by design; the images' ranking must stay (Spearman)


def main(p):
    b = p.benchmark
    runners = {name: load_runner(path, b.threads) for name, path in ARTIFACTS.items()}
    runners["fp32_openvino"] = openvino_runner(ARTIFACTS["fp32_onnxruntime"], b.threads)
    pixels = load_split("test", p.data.image_size)[0][: b.batch_size].float().div(255).numpy()
    compiled = compiled_torch_runner(ARTIFACTS["fp32_eager"], b.threads, pixels) if b.torch_compile else None
    if compiled is not None:
        runners["fp32_torch_compile"] = compiled
    fp32 = [n for n in runners if n.startswith("fp32")]
    agreement = check_agreement({n: runners[n] for n in fp32}, pixels, atol=FP32_ATOL)
    agreement |= check_agreement(
        {n: runners[n] for n in runners if n not in fp32[1:]}, pixels, min_correlation=INT8_MIN_CORRELATION
    )
    report = benchmark(
        runners,
        p.data.image_size,
        warmup=b.warmup,
        repeats=b.repeats,
        batch_size=b.batch_size,
        seed=p.seed,
    )
    sizes = {f"{n}_size_mb": artifact_size_mb(path) for n, path in ARTIFACTS.items()}
    sizes |= {f"{n}_size_ratio": sizes[f"{n}_size_mb"] / sizes["fp32_eager_size_mb"] for n in ARTIFACTS}
    write_json("metrics/benchmark.json", {**report, **sizes, **agreement}, digits=3)
    write_json("reports/machine.json", machine_facts(b.threads))
    benchmark_png("plots/benchmark.png", report, b.batch_size)


if __name__ == "__main__":
    run_stage(main)
