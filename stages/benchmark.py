"""Stage benchmark: CPU size, batch-1 latency and batch throughput of every artifact, measured in
one interleaved run against FP32 eager PyTorch, after checking that all of them agree."""

from gclf.bench.harness import machine_facts
from gclf.bench.models import benchmark_artifacts
from gclf.data.images import load_split
from gclf.evaluate.plots import benchmark_png
from gclf.export.artifact import input_pixels
from gclf.io import write_json
from gclf.stage import run_stage

INT8_MIN_CORRELATION = 0.8  # INT8: logits move by design; the images' ranking must stay (Spearman)


def main(p):
    b = p.benchmark
    pixels = input_pixels(load_split("test", p.data.image_size)[0][: b.batch_size])
    report = benchmark_artifacts(
        pixels,
        threads=b.threads,
        warmup=b.warmup,
        repeats=b.repeats,
        seed=p.seed,
        torch_compile=b.torch_compile,
        int8_min_correlation=INT8_MIN_CORRELATION,
    )
    # Static INT8's speed-ups and size first: what `dvc exp show` lists at the head of this file.
    batch = len(pixels)  # benchmark.batch_size, or the whole test split when smaller
    headline = ["int8_static_speedup_b1", f"int8_static_speedup_b{batch}", "int8_static_size_ratio"]
    write_json("metrics/benchmark.json", report, digits=3, first=headline)
    write_json("reports/machine.json", machine_facts(b.threads))
    benchmark_png("plots/benchmark.png", report, batch)


if __name__ == "__main__":
    run_stage(main, stage="benchmark")
