//! `neural-collapse`: the command line over the library.
//!
//! ```text
//! neural-collapse metrics FILE [--epoch N] [--split train|test] [--reference own|train]
//!                              [--classifier FILE] [--global-mean class|sample]
//!                              [--label label|coarse] [--tolerance RTOL] [--format table|json]
//!                              [--min-class-samples K] [--cdnv-exponent P] [--riesz-s S]
//!                              [--generalized] [--nc1-route auto|classes|features]
//! neural-collapse stats FILE... --out PART [--shard I/N] [--means MEANS_PART] [--run NAME]
//!                       [--seed S] [--label label|coarse] [--reference own|train]
//!                       [--classifier PATH] [--global-mean class|sample] [--tolerance T]
//! neural-collapse merge PART... [--out PART] [--format table|json|parquet] [--output FILE]
//! neural-collapse probe FILE [--label label|coarse] [--kind least-squares|logistic|linfa-ols]
//!                            [--epoch N] [--penalty λ | --penalty-grid λ1,λ2,…]
//!                            [--no-standardize] [--format table|json]
//! neural-collapse train --preset train-test|transfer|cascade [--dataset mnist|fashion-mnist]
//!                       [--per-class N] [--epochs N] [--width N] [--depth N] [--loss mse|cross-entropy]
//!                       [--seed N] [--out DIR] …            (needs `--features train`)
//! neural-collapse reproduce [--runs data/runs] [--out target/figures]
//! ```
//!
//! Errors (bad arguments included) are printed as one line on stderr and exit with code 2.
//! Output is written with checked writes: a closed pipe (`… | head -0`) ends the program quietly
//! with exit code 0, as Unix tools do; another write error (`> /dev/full`) is an error (exit 2).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use neural_collapse::metrics::MeasureOptions;
use neural_collapse::prelude::*;
use neural_collapse::stream::measure_scan;

#[derive(Parser)]
#[command(
    name = "neural-collapse",
    version,
    about = "Neural Collapse metrics and linear probes for trained networks' features"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// NC1–NC4 and CDNV for every (epoch, split) of a feature file.
    Metrics(MetricsArgs),
    /// Mergeable partial statistics of feature files, or of a shard of their rows (for
    /// features larger than memory and cluster job arrays; see `merge`).
    #[command(long_about = STATS_HELP)]
    Stats(StatsArgs),
    /// Merge partials from `stats`: the reports when pass 2 is complete, else the merged means
    /// partial for the pass-2 shards.
    #[command(long_about = MERGE_HELP)]
    Merge(MergeArgs),
    /// Linear-probe accuracy per epoch: fit on the train split, score on the test split.
    Probe(ProbeArgs),
    /// Train a network on MNIST / Fashion-MNIST and export its features at log-spaced
    /// checkpoints (needs the cargo feature `train`).
    Train(TrainArgs),
    /// The paper's three findings on the bundled runs: every figure to target/figures/ (SVG and
    /// PNG) and one CHECK line per finding.
    Reproduce(ReproduceArgs),
}

#[derive(clap::Args)]
struct ReproduceArgs {
    /// Directory holding the bundled runs.
    #[arg(long, default_value = "data/runs")]
    runs: PathBuf,
    /// Where the figures go.
    #[arg(long, default_value = "target/figures")]
    out: PathBuf,
}

fn run_reproduce(a: &ReproduceArgs) -> Result<String> {
    let r = neural_collapse::findings::reproduce(&a.runs, &a.out)?;
    let mut text: Vec<String> = r.checks.iter().map(ToString::to_string).collect();
    text.extend(r.notes.iter().map(|n| format!("note: {n}")));
    text.push(format!(
        "{} figures written to {} ({} files, SVG and PNG)",
        r.written.len() / 2,
        a.out.display(),
        r.written.len()
    ));
    Ok(text.join("\n"))
}

#[derive(Clone, Copy, ValueEnum)]
enum PresetArg {
    TrainTest,
    Transfer,
    Cascade,
}

#[derive(Clone, Copy, ValueEnum)]
enum ModelArg {
    Mlp,
    Cnn,
}

#[derive(Clone, Copy, ValueEnum)]
enum LossArg {
    Mse,
    CrossEntropy,
}

#[derive(clap::Args)]
struct TrainArgs {
    /// The experiment: 10-class train/test collapse, coarse-label transfer, or a deep MLP with
    /// every layer exported.
    #[arg(long, value_enum)]
    preset: PresetArg,
    /// Dataset (`mnist` or `fashion-mnist`); the transfer preset is always Fashion-MNIST.
    #[arg(long, default_value = "mnist")]
    dataset: String,
    /// Network: MLP or small CNN.
    #[arg(long, value_enum)]
    model: Option<ModelArg>,
    /// Hidden layers of the MLP.
    #[arg(long)]
    depth: Option<usize>,
    /// Units per hidden layer (MLP) or of the fully connected layer (CNN).
    #[arg(long)]
    width: Option<usize>,
    /// Channels of the CNN's first convolution.
    #[arg(long)]
    channels: Option<usize>,
    /// Loss.
    #[arg(long, value_enum)]
    loss: Option<LossArg>,
    /// Training images per class.
    #[arg(long)]
    per_class: Option<usize>,
    /// Epochs.
    #[arg(long)]
    epochs: Option<u32>,
    /// Mini-batch size.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Initial learning rate.
    #[arg(long)]
    lr: Option<f64>,
    /// Weight decay.
    #[arg(long)]
    weight_decay: Option<f64>,
    /// Seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Train on coarse labels: fashion-2way-semantic, fashion-2way-balanced, fashion-5pairs,
    /// mnist-low-high, or `none`.
    #[arg(long)]
    coarse: Option<String>,
    /// Layers to export: `last`, `all`, or a comma-separated list (fc1,fc3).
    #[arg(long)]
    layers: Option<String>,
    /// Exported images per class and split.
    #[arg(long)]
    export_per_class: Option<usize>,
    /// Number of log-spaced checkpoints (including epoch 0 and the last).
    #[arg(long)]
    checkpoints: Option<usize>,
    /// Also a checkpoint at every multiple of this many epochs (0: none).
    #[arg(long)]
    checkpoint_every: Option<u32>,
    /// Exported test images per class (default: --export-per-class).
    #[arg(long)]
    export_test_per_class: Option<usize>,
    /// Learning-rate milestones as fractions of the epochs (comma-separated, e.g. 0.5,0.75).
    #[arg(long, value_delimiter = ',')]
    lr_milestones: Option<Vec<f64>>,
    /// Factor applied to the learning rate at each milestone.
    #[arg(long)]
    lr_gamma: Option<f64>,
    /// Measure test accuracy every this many epochs (and at every checkpoint).
    #[arg(long)]
    test_eval_every: Option<u32>,
    /// Output directory (default data/runs/<dataset>-<preset>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Directory holding mnist/ and fashion-mnist/ (default: $NEURAL_COLLAPSE_DATA or data/).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[cfg(not(feature = "train"))]
fn run_train(_: &TrainArgs) -> std::result::Result<String, String> {
    Err("this binary was built without the `train` feature: run `cargo run --release --features train -- train …`".into())
}

#[cfg(feature = "train")]
fn run_train(a: &TrainArgs) -> std::result::Result<String, String> {
    train_with(a).map_err(|e| e.to_string())
}

#[cfg(feature = "train")]
fn train_with(a: &TrainArgs) -> Result<String> {
    use neural_collapse::datasets::CoarseMap;
    use neural_collapse::train::{
        Architecture, LayerSelection, Loss, Preset, TrainConfig, TrainError,
    };
    let bad = |m: String| neural_collapse::Error::from(TrainError::Config(m));
    let dataset: DatasetKind = a.dataset.parse()?;
    let preset = match a.preset {
        PresetArg::TrainTest => Preset::TrainTest,
        PresetArg::Transfer => Preset::Transfer,
        PresetArg::Cascade => Preset::Cascade,
    };
    let mut c = TrainConfig::preset(preset, dataset);
    match a.model {
        Some(ModelArg::Cnn) => {
            c = c.architecture(Architecture::Cnn {
                channels: a.channels.unwrap_or(16),
                width: 128,
            })
        }
        Some(ModelArg::Mlp) if !matches!(c.architecture, Architecture::Mlp { .. }) => {
            c = c.architecture(Architecture::Mlp {
                depth: 3,
                width: 128,
            })
        }
        _ => {}
    }
    if let (Some(ch), Architecture::Cnn { width, .. }) = (a.channels, c.architecture) {
        c = c.architecture(Architecture::Cnn {
            channels: ch,
            width,
        });
    }
    if let Some(v) = a.depth {
        c = c.depth(v);
    }
    if let Some(v) = a.width {
        c = c.width(v);
    }
    if let Some(v) = a.loss {
        c = c.loss(match v {
            LossArg::Mse => Loss::Mse,
            LossArg::CrossEntropy => Loss::CrossEntropy,
        });
    }
    if let Some(v) = a.per_class {
        c = c.per_class(v);
    }
    if let Some(v) = a.epochs {
        c = c.epochs(v);
    }
    if let Some(v) = a.batch_size {
        c = c.batch_size(v);
    }
    if let Some(v) = a.lr {
        c = c.lr(v);
    }
    if let Some(v) = a.weight_decay {
        c = c.weight_decay(v);
    }
    if let Some(v) = a.seed {
        c = c.seed(v);
    }
    if let Some(v) = a.export_per_class {
        c = c.export_per_class(v);
    }
    if let Some(v) = a.checkpoints {
        c = c.checkpoints(v);
    }
    if let Some(v) = a.checkpoint_every {
        c = c.checkpoint_every(v);
    }
    if let Some(v) = a.export_test_per_class {
        c = c.export_test_per_class(v);
    }
    if a.lr_milestones.is_some() || a.lr_gamma.is_some() {
        let m = a
            .lr_milestones
            .clone()
            .unwrap_or_else(|| c.lr_milestones.clone());
        let g = a.lr_gamma.unwrap_or(c.lr_gamma);
        c = c.lr_schedule(m, g);
    }
    if let Some(v) = a.test_eval_every {
        c = c.test_eval_every(v);
    }
    if let Some(name) = &a.coarse {
        let map = match name.as_str() {
            "none" => None,
            "fashion-2way-semantic" => Some(CoarseMap::fashion_2way_semantic()),
            "fashion-2way-balanced" => Some(CoarseMap::fashion_2way_balanced()),
            "fashion-5pairs" => Some(CoarseMap::fashion_5pairs()),
            "mnist-low-high" => Some(CoarseMap::mnist_low_high()),
            other => return Err(bad(format!("--coarse {other}: expected fashion-2way-semantic, fashion-2way-balanced, fashion-5pairs, mnist-low-high or none"))),
        };
        c = c.coarse(map);
    }
    if let Some(l) = &a.layers {
        c = c.layers(match l.as_str() {
            "last" => LayerSelection::Last,
            "all" => LayerSelection::All,
            list => LayerSelection::Named(list.split(',').map(|s| s.trim().to_string()).collect()),
        });
    }
    if let Some(d) = &a.data_dir {
        c = c.data_dir(d);
    }
    c = c.progress(!a.quiet);
    let out = match &a.out {
        Some(o) => o.clone(),
        None => PathBuf::from(format!("data/runs/{}", c.default_run_name())),
    };
    c = c.out(out);
    // A closed or full stderr must not abort training: the line is informational.
    let _ = writeln!(std::io::stderr(), "training: {}", c.command());
    let summary = c.run()?;
    Ok(summary.to_string())
}

/// `--epoch`: a checkpoint number, `0 ..= u32::MAX` (negative values reach here as values, so
/// that the message is a range message rather than "unexpected argument").
fn parse_epoch(s: &str) -> std::result::Result<u32, String> {
    let range = || format!("an epoch is an integer in 0..={}", u32::MAX);
    match s.trim().parse::<i128>() {
        Ok(v) => u32::try_from(v).map_err(|_| range()),
        Err(_) => Err(format!("not an integer ({})", range())),
    }
}

/// `--tolerance`: a finite number in [0, 1).
fn parse_min_class_samples(s: &str) -> std::result::Result<usize, String> {
    match s.parse::<i64>() {
        Ok(k) if k >= 1 => usize::try_from(k).map_err(|e| e.to_string()),
        Ok(k) => Err(format!(
            "{k} is out of range: a class needs at least 1 sample"
        )),
        Err(e) => Err(format!("{s:?} is not an integer: {e}")),
    }
}

fn parse_tolerance(s: &str) -> std::result::Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..1.0).contains(&v) => Ok(v),
        Ok(_) => Err("the tolerance must be a finite number in [0, 1)".into()),
        Err(_) => Err("not a number (the tolerance must be a finite number in [0, 1))".into()),
    }
}

/// `--penalty`, `--penalty-grid`: a finite number ≥ 0.
fn parse_penalty(s: &str) -> std::result::Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        Ok(_) => Err("a penalty must be a finite number ≥ 0".into()),
        Err(_) => Err("not a number (a penalty must be a finite number ≥ 0)".into()),
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
}

/// `--reference`, `--global-mean`, `--tolerance` of `metrics` and `stats`: the library's
/// [`NcConfig`], parsed into its own enums.
#[derive(clap::Args)]
struct ConfigArgs {
    /// Class means to measure each split against: its own, or the train split's of the same
    /// epoch.
    #[arg(long, value_enum, default_value = "own")]
    reference: ReferenceChoice,
    /// Global mean: mean of the class means, or the sample mean.
    #[arg(long, value_enum, default_value = "class")]
    global_mean: GlobalMean,
    /// Relative eigenvalue tolerance of the pseudo-inverse of Σ_B, in [0, 1).
    #[arg(long, default_value_t = DEFAULT_TOLERANCE, allow_negative_numbers = true, value_parser = parse_tolerance)]
    tolerance: f64,
}

impl ConfigArgs {
    fn config(&self) -> NcConfig {
        NcConfig {
            reference: self.reference,
            global_mean: self.global_mean,
            tolerance: self.tolerance,
        }
    }
}

#[derive(clap::Args)]
struct MetricsArgs {
    /// Feature file: schema v1 Parquet, a wide table (x_0 … x_{d-1}) in Parquet or CSV.
    file: PathBuf,
    /// Only this checkpoint.
    #[arg(long, allow_negative_numbers = true, value_parser = parse_epoch)]
    epoch: Option<u32>,
    /// Only this split (`train` or `test`).
    #[arg(long)]
    split: Option<String>,
    #[command(flatten)]
    config: ConfigArgs,
    /// classifier.parquet (epoch, class, bias, w): enables NC2 of W, NC3 and NC4.
    #[arg(long)]
    classifier: Option<PathBuf>,
    /// Classes from the fine `label` column or from the `coarse` labels the network was trained on.
    #[arg(long, value_enum, default_value = "label")]
    label: LabelColumn,
    /// Measure only the classes with at least K samples and list the others ("classes
    /// dropped"); by default every class 0..C must have a sample (an empty class is an error).
    #[arg(long, value_name = "K", allow_negative_numbers = true, value_parser = parse_min_class_samples)]
    min_class_samples: Option<usize>,
    /// Exponent p of the CDNV's squared distance, (σ²_c + σ²_c') / (2 ‖μ_c − μ_c'‖^(2p)):
    /// 1 (Galanti et al., the default), 2 (Wu & Papyan).
    #[arg(long, value_name = "P", default_value_t = 1.0, allow_negative_numbers = true, value_parser = parse_positive)]
    cdnv_exponent: f64,
    /// Riesz exponent s of GNC2's Riesz-s energy, mean ‖û_c − û_c'‖^(−s).
    #[arg(long, value_name = "S", default_value_t = neural_collapse::generalized::DEFAULT_RIESZ_S, allow_negative_numbers = true, value_parser = parse_positive)]
    riesz_s: f64,
    /// Report GNC2 (log and Riesz-s energies) and the NC3 variants even when C ≤ d + 1 (they
    /// are reported anyway when C > d + 1, where no simplex ETF exists).
    #[arg(long)]
    generalized: bool,
    /// Side NC1's pseudo-inverse is decomposed from: the smaller (auto), the C × C side
    /// (classes) or the d × d side (features); all give the same NC1 up to rounding.
    #[arg(long, value_enum, default_value = "auto")]
    nc1_route: Nc1Route,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

/// `--cdnv-exponent`, `--riesz-s`: a finite number > 0.
fn parse_positive(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        Ok(_) => Err("must be a finite number > 0".into()),
        Err(_) => Err("not a number (must be a finite number > 0)".into()),
    }
}

const STATS_HELP: &str = "Mergeable partial statistics of feature files, or of a shard of their rows.

Without --shard: both passes over each whole FILE; writes a complete partial (every (epoch, split) \
group of every FILE) to --out.
With --shard I/N (0 <= I < N): only rows floor(I*n/N) .. floor((I+1)*n/N) of each FILE (n its row \
count). Without --means this writes a pass-1 partial (counts and f64 sums per run/layer/epoch/split/\
class); with --means MEANS_PART (the `merge` of the pass-1 partials) a pass-2 partial (NC1 \
numerator, per-class scatter about the reference means, NC4 mismatches).
Run name and seed come from the FILE's run directory (run.json beside it) when present, else from \
--run/--seed; the layer from features-<layer>.parquet (else the file stem); epoch and split from \
the file's columns.
If --out already holds this job's partial (same inputs and options), nothing is done (resumption).
The format (Parquet with key-value metadata neural_collapse_partial = \"1\") is documented in the \
crate's `partial` module.";

const MERGE_HELP: &str = "Merge partials from `stats` (any order).

If every group has pass-2 state covering all its rows, prints the reports (table or json as \
`neural-collapse metrics`, with run, seed and layer), or with --format parquet --output FILE writes \
one tidy Parquet file (run, seed, epoch, split, layer, metric, value); --out also writes the \
merged partial. If the merged state is pass-1 only, writes it to --out: the MEANS_PART of the \
pass-2 shards (`stats --shard I/N --means MEANS_PART`).";

#[derive(clap::Args)]
struct StatsArgs {
    /// Feature files (schema v1 Parquet or CSV).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Where the partial goes (Parquet).
    #[arg(long)]
    out: PathBuf,
    /// Only shard I of N of each file's rows.
    #[arg(long, value_name = "I/N")]
    shard: Option<String>,
    /// A merged pass-1 partial: measure pass 2 against its means.
    #[arg(long, value_name = "MEANS_PART")]
    means: Option<PathBuf>,
    /// Run name when the file has no run.json beside it.
    #[arg(long)]
    run: Option<String>,
    /// Seed when the file has no run.json beside it.
    #[arg(long, allow_negative_numbers = true)]
    seed: Option<i64>,
    /// Classes from the fine `label` column or from the `coarse` labels.
    #[arg(long, value_enum, default_value = "label")]
    label: LabelColumn,
    #[command(flatten)]
    config: ConfigArgs,
    /// classifier.parquet (epoch, class, bias, w): enables NC2 of W, NC3 and NC4.
    #[arg(long)]
    classifier: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum MergeFormat {
    Table,
    Json,
    Parquet,
}

#[derive(clap::Args)]
struct MergeArgs {
    /// Partials written by `stats` (or `merge --out`).
    #[arg(required = true)]
    parts: Vec<PathBuf>,
    /// Write the merged partial here (required when the merged state is pass-1 only).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Output format of the reports.
    #[arg(long, value_enum, default_value = "table")]
    format: MergeFormat,
    /// The tidy Parquet file of `--format parquet`.
    #[arg(long)]
    output: Option<PathBuf>,
}

/// A progress bar on stderr when it is a terminal (feature `progress`), else nothing.
struct Progress {
    #[cfg(feature = "progress")]
    bar: indicatif::ProgressBar,
}

impl Progress {
    #[allow(unused_variables)]
    fn new(total: u64, what: &str) -> Self {
        #[cfg(feature = "progress")]
        {
            use std::io::IsTerminal;
            let bar = if std::io::stderr().is_terminal() {
                indicatif::ProgressBar::new(total)
            } else {
                indicatif::ProgressBar::hidden()
            };
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {human_pos}/{human_len} rows, {per_sec}, ETA {eta}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(what.to_string());
            Progress { bar }
        }
        #[cfg(not(feature = "progress"))]
        Progress {}
    }

    #[allow(unused_variables)]
    fn inc(&self, rows: u64) {
        #[cfg(feature = "progress")]
        self.bar.inc(rows);
    }

    fn finish(&self) {
        #[cfg(feature = "progress")]
        self.bar.finish_and_clear();
    }
}

fn measure_options(
    labels: LabelColumn,
    config: NcConfig,
    classifier: Option<PathBuf>,
) -> MeasureOptions {
    MeasureOptions {
        config,
        classifier,
        labels,
        ..MeasureOptions::default()
    }
}

/// Whether `x` and `y` name the same existing file.
fn same_file(x: &std::path::Path, y: &std::path::Path) -> bool {
    std::fs::canonicalize(x)
        .ok()
        .is_some_and(|x| std::fs::canonicalize(y).is_ok_and(|y| x == y))
}

fn run_stats(a: &StatsArgs) -> Result<String> {
    use neural_collapse::partial::{parse_shard, read_means, PartialOptions, StatsJob};
    use neural_collapse::stream::{Source, DEFAULT_BATCH_BYTES};
    // --out must not be one of the files read: it is replaced.
    if let Some(f) = a
        .files
        .iter()
        .chain(a.means.iter())
        .chain(a.classifier.iter())
        .find(|f| same_file(&a.out, f))
    {
        return Err(neural_collapse::partial::PartialError::Format {
            path: a.out.display().to_string(),
            problem: format!(
                "--out is also an input ({}): write the partial elsewhere",
                f.display()
            ),
        }
        .into());
    }
    let shard = a.shard.as_deref().map(parse_shard).transpose()?;
    let options = PartialOptions::from_measure(&measure_options(
        a.label,
        a.config.config(),
        a.classifier.clone(),
    ));
    let means = match &a.means {
        Some(p) => Some(read_means(p, &options)?),
        None => None,
    };
    let sources = a
        .files
        .iter()
        .map(|f| Source::open(f, a.run.as_deref(), a.seed))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let job = StatsJob {
        sources,
        shard,
        means,
        options,
        batch_bytes: DEFAULT_BATCH_BYTES,
    };
    if job.is_done(&a.out) {
        let _ = writeln!(
            std::io::stderr(),
            "{}: already holds this {} partial (same inputs and options); skipped",
            a.out.display(),
            job.kind().name()
        );
        return Ok(String::new());
    }
    let progress = Progress::new(job.total_rows(), job.kind().name());
    let part = job.run(&mut |rows| progress.inc(rows))?;
    progress.finish();
    part.write(&a.out)?;
    Ok(format!(
        "{}: {} partial, {} groups, {} files",
        a.out.display(),
        part.kind.name(),
        part.means.len(),
        part.inputs.len()
    ))
}

fn run_merge(a: &MergeArgs) -> Result<String> {
    use neural_collapse::partial::{write_tidy, Kind, Partial};
    // Writing over one of the partials being merged would lose it (and a later resumption
    // would read the merge as that shard).
    for out in a.out.iter().chain(a.output.iter()) {
        if let Some(p) = a.parts.iter().find(|p| same_file(out, p)) {
            return Err(neural_collapse::partial::PartialError::Format {
                path: out.display().to_string(),
                problem: format!(
                    "is also a partial being merged ({}): write the result elsewhere",
                    p.display()
                ),
            }
            .into());
        }
    }
    let parts = a
        .parts
        .iter()
        .map(|p| Ok((p.display().to_string(), Partial::read(p)?)))
        .collect::<Result<Vec<_>>>()?;
    let merged = Partial::merge_all(parts)?;
    if merged.kind == Kind::Pass1 {
        let Some(out) = &a.out else {
            return Err(neural_collapse::partial::PartialError::Format {
                path: a.parts[0].display().to_string(),
                problem: "the merged state is pass-1 only: give --out MEANS_PART to write it (the --means of the pass-2 shards)".into(),
            }
            .into());
        };
        merged.write(out)?;
        return Ok(format!(
            "{}: merged pass-1 partial of {} partials, {} groups",
            out.display(),
            a.parts.len(),
            merged.means.len()
        ));
    }
    let reports = merged.reports()?;
    if let Some(out) = &a.out {
        merged.write(out)?;
    }
    Ok(match a.format {
        MergeFormat::Parquet => {
            let Some(path) = &a.output else {
                return Err(neural_collapse::partial::PartialError::Format {
                    path: a.parts[0].display().to_string(),
                    problem: "--format parquet needs --output FILE".into(),
                }
                .into());
            };
            write_tidy(path, &reports)?;
            format!(
                "{}: {} reports, {} rows",
                path.display(),
                reports.len(),
                reports
                    .iter()
                    .map(|(_, r)| r.metrics().len())
                    .sum::<usize>()
            )
        }
        MergeFormat::Json => {
            let arr: Vec<serde_json::Value> = reports
                .iter()
                .map(|(k, r)| {
                    let mut j = r.to_json();
                    if let Some(m) = j.as_object_mut() {
                        m.insert("run".into(), k.run.clone().into());
                        m.insert("seed".into(), k.seed.into());
                        m.insert("layer".into(), k.layer.clone().into());
                    }
                    j
                })
                .collect();
            serde_json::to_string_pretty(&arr).expect("JSON values serialise")
        }
        MergeFormat::Table => {
            // One table per (run, seed, layer), as `metrics` prints for one file.
            let mut out = String::new();
            let mut i = 0;
            while i < reports.len() {
                let (k, _) = &reports[i];
                let j = reports[i..]
                    .iter()
                    .position(|(k2, _)| (&k2.run, k2.seed, &k2.layer) != (&k.run, k.seed, &k.layer))
                    .map_or(reports.len(), |p| i + p);
                let group: Vec<NcReport> = reports[i..j].iter().map(|(_, r)| r.clone()).collect();
                out.push_str(&format!(
                    "run {}, seed {}, layer {}\n",
                    k.run.as_deref().unwrap_or("-"),
                    k.seed.map_or("-".into(), |s| s.to_string()),
                    k.layer
                ));
                out.push_str(&metrics_table(&group));
                i = j;
            }
            out.trim_end().to_string()
        }
    })
}

#[derive(clap::Args)]
struct ProbeArgs {
    /// Feature file (schema v1) with `train` and `test` splits.
    file: PathBuf,
    /// Labels to fit and score: the fine `label` column or the `coarse` one.
    #[arg(long, value_enum, default_value = "label")]
    label: LabelColumn,
    /// Probe: least squares on one-hot targets, multinomial logistic regression, or unpenalised
    /// one-vs-rest least squares through linfa-linear (no --penalty or --penalty-grid; its
    /// predictions do not depend on standardisation).
    #[arg(long, value_enum, default_value = "least-squares")]
    kind: ProbeKind,
    /// Only this checkpoint.
    #[arg(long, allow_negative_numbers = true, value_parser = parse_epoch)]
    epoch: Option<u32>,
    /// Per-sample L2 penalty λ ≥ 0 (default: 1e-3 for least squares, 1e-4 for logistic).
    #[arg(long, conflicts_with = "penalty_grid", allow_negative_numbers = true, value_parser = parse_penalty)]
    penalty: Option<f64>,
    /// Choose λ per checkpoint among these (comma-separated) on a held-out 20 % of each class of
    /// the train split, then refit on all of it; the test split is never used for the choice.
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true, value_parser = parse_penalty)]
    penalty_grid: Option<Vec<f64>>,
    /// Do not scale the feature columns to unit variance before fitting (centring still applies).
    #[arg(long)]
    no_standardize: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

/// The crate's `LinearProbe` of `kind` with the command's penalty and standardisation.
fn linear_probe_scan(
    scan: &FeatureScan,
    a: &ProbeArgs,
    kind: ProbeKind,
    column: LabelColumn,
    epochs: Option<&[u32]>,
) -> Result<Vec<ProbeReport>> {
    let mut probe = LinearProbe::new(kind).label_column(column);
    if let Some(l) = a.penalty {
        probe = probe.penalty(l);
    }
    if let Some(grid) = &a.penalty_grid {
        probe = probe.penalty_grid(grid);
    }
    if a.no_standardize {
        probe = probe.standardize(false);
    }
    Ok(probe_scan(scan, &probe, epochs)?)
}

fn run_probe(a: &ProbeArgs) -> Result<String> {
    let scan = FeatureScan::open(&a.file)?;
    let column = a.label;
    let epochs = a.epoch.map(|e| vec![e]);
    let kind = a.kind;
    let unpenalised = |name, value| ProbeError::InvalidParameter {
        name,
        value,
        expected: "absent with --kind linfa-ols (unpenalised)",
    };
    let reports = if kind == ProbeKind::LinfaOls {
        if let Some(l) = a.penalty {
            return Err(unpenalised("penalty", l).into());
        }
        if let Some(grid) = &a.penalty_grid {
            return Err(
                unpenalised("penalty_grid", grid.first().copied().unwrap_or(f64::NAN)).into(),
            );
        }
        probe_scan_on(&scan, &OneVsRestOls, column, epochs.as_deref())?
    } else {
        linear_probe_scan(&scan, a, kind, column, epochs.as_deref())?
    };
    Ok(match a.format {
        Format::Json => {
            let arr: Vec<serde_json::Value> = reports
                .iter()
                .map(|r| {
                    serde_json::json!({
                        "epoch": r.epoch,
                        "kind": r.kind.name(),
                        "train_accuracy": r.train_accuracy,
                        "test_accuracy": r.test_accuracy,
                        "penalty": r.penalty,
                    })
                })
                .collect();
            serde_json::to_string_pretty(&arr).expect("JSON values serialise")
        }
        Format::Table => probe_table(&reports),
    })
}

/// One row per epoch.
fn probe_table(reports: &[ProbeReport]) -> String {
    let mut out = format!(
        "{:>6} {:>14} {:>7} {:>10} {:>8} {:>8} {:>10} {:>10}\n",
        "epoch", "probe", "labels", "penalty", "n_train", "n_test", "train_acc", "test_acc"
    );
    for r in reports {
        out.push_str(&format!(
            "{:>6} {:>14} {:>7} {:>10.2e} {:>8} {:>8} {:>10.4} {:>10.4}\n",
            r.epoch.map_or("-".into(), |e| e.to_string()),
            r.kind.name(),
            r.label.name(),
            r.penalty,
            r.n_train,
            r.n_test,
            r.train_accuracy,
            r.test_accuracy
        ));
    }
    out
}

fn run_metrics(a: &MetricsArgs) -> Result<String> {
    let scan = FeatureScan::open(&a.file)?;
    let options = MeasureOptions {
        epoch: a.epoch,
        split: a.split.clone(),
        config: a.config.config(),
        classifier: a.classifier.clone(),
        labels: a.label,
        min_class_samples: a.min_class_samples,
        nc1_route: a.nc1_route,
        generalized: neural_collapse::generalized::GeneralizedParams {
            always: a.generalized,
            cdnv_exponent: a.cdnv_exponent,
            riesz_s: a.riesz_s,
        },
    };
    // Bounded batches (two passes of sums, crate::stream); dropping classes by their sample
    // counts needs the whole matrix, so --min-class-samples loads each checkpoint.
    let reports = if options.min_class_samples.is_none() {
        let source = neural_collapse::stream::Source::from_scan(&scan)?;
        let progress = Progress::new(2 * source.rows, "metrics");
        let r = neural_collapse::stream::measure_file(
            &source,
            &options,
            neural_collapse::stream::DEFAULT_BATCH_BYTES,
            &mut |rows| progress.inc(rows),
        );
        progress.finish();
        r?
    } else {
        measure_scan(&scan, &options)?
    };
    Ok(match a.format {
        Format::Json => {
            let arr: Vec<serde_json::Value> = reports.iter().map(NcReport::to_json).collect();
            serde_json::to_string_pretty(&arr).expect("JSON values serialise")
        }
        Format::Table => metrics_table(&reports),
    })
}

/// One row per (epoch, split), one column per metric.
fn metrics_table(reports: &[NcReport]) -> String {
    let Some(first) = reports.first() else {
        return String::new();
    };
    let names: Vec<&str> = first.metrics().iter().map(|(k, _)| k.name()).collect();
    let mut out = format!(
        "{:>6} {:>6} {:>7} {:>4} {:>5} {:>4}",
        "epoch", "split", "n", "C", "d", "rank"
    );
    for k in &names {
        out.push_str(&format!(" {k:>12.12}"));
    }
    out.push('\n');
    for r in reports {
        out.push_str(&format!(
            "{:>6} {:>6} {:>7} {:>4} {:>5} {:>4}",
            r.epoch.map_or("-".into(), |e| e.to_string()),
            r.split.as_deref().unwrap_or("-"),
            r.n,
            r.classes,
            r.dim,
            r.rank
        ));
        for (_, v) in r.metrics() {
            out.push_str(&format!(" {v:>12.4e}"));
        }
        out.push('\n');
    }
    out.push_str(&format!(
        "means: {}, global mean: {}, tolerance {:e}\n",
        first.reference, first.global_mean, first.tolerance
    ));
    for r in reports {
        if let Some(note) = r.dropped_note() {
            out.push_str(&format!(
                "epoch {} split {}: {note}\n",
                r.epoch.map_or("-".into(), |e| e.to_string()),
                r.split.as_deref().unwrap_or("-")
            ));
        }
    }
    out
}

/// One line from clap's message: its text up to the usage line, lines joined with spaces.
fn clap_one_line(e: &clap::Error) -> String {
    if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        // clap would print the whole help on stderr.
        return "a subcommand is required: metrics, stats, merge, probe, train or reproduce (see --help)".into();
    }
    let text = e.to_string();
    let parts: Vec<&str> = text
        .lines()
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let line = parts.join(" ");
    line.strip_prefix("error: ").unwrap_or(&line).to_string()
}

/// Writes `text` and a newline to stdout and flushes it.
fn print_checked(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.write_all(b"\n")?;
    out.flush()
}

/// Ends after `text` was printed (or could not be): a closed pipe is a quiet success, any other
/// write error one line on stderr and exit code 2.
fn finish_output(written: std::io::Result<()>) -> ExitCode {
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => fail(&format!("cannot write to standard output: {e}")),
    }
}

/// One line on stderr (newlines in `msg` become spaces), exit code 2. A failure to write the
/// line itself is ignored: there is nowhere left to report it.
fn fail(msg: &str) -> ExitCode {
    let _ = writeln!(std::io::stderr().lock(), "error: {}", one_line(msg));
    ExitCode::from(2)
}

/// `msg` as one printable line: line breaks become spaces, other control characters (a value
/// of a damaged file may hold an escape sequence that would act on the terminal) their escapes.
fn one_line(msg: &str) -> String {
    msg.chars()
        .map(|c| match c {
            '\r' | '\n' => " ".to_string(),
            c if c.is_control() => c.escape_default().to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// Whether a panic at source file `file` lies in one of polars' crates (a registry path such
/// as `…/polars-parquet-0.52.0/src/…`).
fn in_polars(file: &str) -> bool {
    file.starts_with("polars-") || file.contains("/polars-") || file.contains("\\polars-")
}

/// polars' reader panics on some damaged files (on its own threads, then again where the
/// library waits for them); the library catches that and returns an error naming the file
/// (`features::CollectGuarded`), which `main` prints as its one line. The default hook would
/// print every such panic first, with a backtrace under `RUST_BACKTRACE`: this hook keeps
/// quiet about panics located in polars' crates or raised on its worker threads, and leaves the others
/// to the default hook.
/// A panic that nothing catches still ends in one line, from `main`.
fn quiet_polars_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // polars' worker threads pass their panics on to the thread that waits for them,
        // where the library's guard (or `main`) turns them into one error line.
        let polars_thread = std::thread::current()
            .name()
            .is_some_and(|n| n.starts_with("polars"));
        if !info.location().is_some_and(|l| in_polars(l.file())) && !polars_thread {
            default(info);
        }
    }));
}

fn main() -> ExitCode {
    quiet_polars_panics();
    match std::panic::catch_unwind(run) {
        Ok(code) => code,
        Err(panic) => {
            let what = neural_collapse::features::panic_text(panic.as_ref());
            let _ = writeln!(
                std::io::stderr().lock(),
                "error: internal error (a bug, please report it): {}",
                one_line(&what)
            );
            ExitCode::from(101)
        }
    }
}

fn run() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version: clap's text on stdout, exit 0.
        Err(e) if !e.use_stderr() => {
            return finish_output(print_checked(e.render().to_string().trim_end()))
        }
        Err(e) => return fail(&clap_one_line(&e)),
    };
    let result = match &cli.command {
        Command::Metrics(a) => run_metrics(a).map_err(|e| e.to_string()),
        Command::Stats(a) => run_stats(a).map_err(|e| e.to_string()),
        Command::Merge(a) => run_merge(a).map_err(|e| e.to_string()),
        Command::Probe(a) => run_probe(a).map_err(|e| e.to_string()),
        Command::Train(a) => run_train(a),
        Command::Reproduce(a) => run_reproduce(a).map_err(|e| e.to_string()),
    };
    match result {
        Ok(text) if text.is_empty() => ExitCode::SUCCESS,
        Ok(text) => finish_output(print_checked(&text)),
        Err(e) => fail(&e),
    }
}
