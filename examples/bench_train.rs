//! Training throughput of the `train-test` MLP against the machine's measured matrix-multiply
//! rate (issue #3's benchmark).
//!
//! ```text
//! cargo run --release --features train --example bench_train -- [EPOCHS] [REPEATS]
//! ```
//!
//! 1. **Matrix-multiply rate.** candle's CPU `matmul` (the kernel the trainer uses), f32, timed
//!    best-of-`REPEATS` on (a) the products of one training step of the MLP 784→256→256→256→10 at
//!    batch 128 (forward `X·W`, and the backward products `δ·Wᵀ` and `Xᵀ·δ`) and
//!    (b) a 1024×1024×1024 product, the machine's attainable rate. Rate = `2·m·k·n / seconds`.
//! 2. **Training.** `TrainConfig::preset(TrainTest, Mnist)` for `EPOCHS` epochs (default 10; 2
//!    checkpoints) on the 3,000-image MNIST subset; the trainer's own `samples_per_second` counts
//!    optimisation steps only (no evaluation or export).
//! 3. **Fraction.** Floating-point work per training sample = the step's products above divided
//!    by the batch: `2·fan_in·fan_out` per layer forward and twice that backward, except the first
//!    layer's input gradient, which is not computed (the images need none); 1.60 MFLOP for this
//!    MLP. Achieved rate = that × samples/s, printed as a fraction of both matmul rates.
//!    Element-wise work (ReLU, loss, SGD update) is not counted. `threads` is candle's thread
//!    count (`RAYON_NUM_THREADS` when set, else the available cores).
//!
//! Needs the MNIST files (`scripts/fetch-datasets.sh`). Prints one JSON object.

use std::time::Instant;

use candle_core::{Device, Tensor};
use neural_collapse::datasets::DatasetKind;
use neural_collapse::train::{Preset, TrainConfig};

/// Best-of-`repeats` seconds of `a · b` with shapes `m×k` and `k×n`.
fn time_matmul(m: usize, k: usize, n: usize, repeats: usize) -> candle_core::Result<f64> {
    let dev = Device::Cpu;
    let a = Tensor::randn(0f32, 1.0, (m, k), &dev)?;
    let b = Tensor::randn(0f32, 1.0, (k, n), &dev)?;
    // Warm-up (thread pool, allocations).
    let _ = a.matmul(&b)?;
    let mut best = f64::INFINITY;
    // Small products are repeated inside one timing so that each timing lasts ≥ ~10 ms.
    let inner = (2e7 / (2.0 * (m * k * n) as f64)).ceil().max(1.0) as usize;
    for _ in 0..repeats {
        let t = Instant::now();
        for _ in 0..inner {
            let c = a.matmul(&b)?;
            std::hint::black_box(c);
        }
        best = best.min(t.elapsed().as_secs_f64() / inner as f64);
    }
    Ok(best)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let epochs: u32 = args.next().map_or(Ok(10), |s| s.parse())?;
    let repeats: usize = args.next().map_or(Ok(5), |s| s.parse())?;

    let batch = 128;
    let dims = [784usize, 256, 256, 256, 10];
    // One training step's products, with their shapes (m, k, n).
    let mut step: Vec<(usize, usize, usize)> = Vec::new();
    for (i, w) in dims.windows(2).enumerate() {
        let (fan_in, fan_out) = (w[0], w[1]);
        step.push((batch, fan_in, fan_out)); // forward X·W
        if i > 0 {
            // backward δ·Wᵀ (not for the first layer: the images need no gradient)
            step.push((batch, fan_out, fan_in));
        }
        step.push((fan_in, batch, fan_out)); // backward Xᵀ·δ
    }
    let (mut step_flops, mut step_seconds) = (0.0, 0.0);
    for &(m, k, n) in &step {
        step_flops += 2.0 * (m * k * n) as f64;
        step_seconds += time_matmul(m, k, n, repeats)?;
    }
    let step_rate = step_flops / step_seconds;
    let big = 1024;
    let big_rate = 2.0 * (big * big * big) as f64 / time_matmul(big, big, big, repeats)?;

    let dir = std::env::temp_dir().join(format!("nc-bench-train-{}", std::process::id()));
    let summary = TrainConfig::preset(Preset::TrainTest, DatasetKind::Mnist)
        .epochs(epochs)
        .checkpoints(2)
        .progress(false)
        .out(&dir)
        .run()?;
    let _ = std::fs::remove_dir_all(&dir);
    let per_sample: f64 = step
        .iter()
        .map(|&(m, k, n)| 2.0 * (m * k * n) as f64)
        .sum::<f64>()
        / batch as f64;
    let achieved = per_sample * summary.samples_per_second;
    let threads = candle_core::utils::get_num_threads();
    println!(
        "{{\"threads\": {threads}, \"epochs\": {epochs}, \"samples_per_second\": {:.0}, \
         \"flop_per_sample\": {per_sample:.0}, \"achieved_gflops\": {:.2}, \
         \"matmul_step_shapes_gflops\": {:.2}, \"matmul_1024_gflops\": {:.2}, \
         \"fraction_of_step_shapes\": {:.3}, \"fraction_of_1024\": {:.3}}}",
        summary.samples_per_second,
        achieved / 1e9,
        step_rate / 1e9,
        big_rate / 1e9,
        achieved / step_rate,
        achieved / big_rate,
    );
    Ok(())
}
