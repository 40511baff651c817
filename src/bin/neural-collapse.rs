//! `neural-collapse`: the command line over the library.
//!
//! ```text
//! neural-collapse metrics FILE [--epoch N] [--split train|test] [--reference own|train]
//!                              [--classifier FILE] [--global-mean class|sample]
//!                              [--tolerance RTOL] [--format table|json]
//! neural-collapse probe FILE [--label label|coarse] [--kind least-squares|logistic]
//!                            [--epoch N] [--penalty λ] [--format table|json]
//! ```
//!
//! Errors are printed as one line on stderr and exit with code 2.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use neural_collapse::metrics::{measure_scan, MeasureOptions, ReferenceChoice};
use neural_collapse::prelude::*;

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
    /// Linear-probe accuracy per epoch: fit on the train split, score on the test split.
    Probe(ProbeArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum RefArg {
    Own,
    Train,
}

#[derive(Clone, Copy, ValueEnum)]
enum GlobalArg {
    Class,
    Sample,
}

#[derive(clap::Args)]
struct MetricsArgs {
    /// Feature file: schema v1 Parquet, a wide table (x_0 … x_{d-1}) in Parquet or CSV.
    file: PathBuf,
    /// Only this checkpoint.
    #[arg(long)]
    epoch: Option<u32>,
    /// Only this split (`train` or `test`).
    #[arg(long)]
    split: Option<String>,
    /// Class means to measure each split against: its own, or the train split's of the same
    /// epoch.
    #[arg(long, value_enum, default_value = "own")]
    reference: RefArg,
    /// classifier.parquet (epoch, class, bias, w): enables NC2 of W, NC3 and NC4.
    #[arg(long)]
    classifier: Option<PathBuf>,
    /// Global mean: mean of the class means, or the sample mean.
    #[arg(long, value_enum, default_value = "class")]
    global_mean: GlobalArg,
    /// Relative eigenvalue tolerance of the pseudo-inverse of Σ_B.
    #[arg(long, default_value_t = DEFAULT_TOLERANCE)]
    tolerance: f64,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

#[derive(Clone, Copy, ValueEnum)]
enum LabelArg {
    Label,
    Coarse,
}

#[derive(Clone, Copy, ValueEnum)]
enum KindArg {
    LeastSquares,
    Logistic,
}

#[derive(clap::Args)]
struct ProbeArgs {
    /// Feature file (schema v1) with `train` and `test` splits.
    file: PathBuf,
    /// Labels to fit and score: the fine `label` column or the `coarse` one.
    #[arg(long, value_enum, default_value = "label")]
    label: LabelArg,
    /// Probe: least squares on one-hot targets, or multinomial logistic regression.
    #[arg(long, value_enum, default_value = "least-squares")]
    kind: KindArg,
    /// Only this checkpoint.
    #[arg(long)]
    epoch: Option<u32>,
    /// Per-sample L2 penalty λ (default: 1e-3 for least squares, 1e-4 for logistic).
    #[arg(long)]
    penalty: Option<f64>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

fn run_probe(a: &ProbeArgs) -> Result<String> {
    let scan = FeatureScan::open(&a.file)?;
    let kind = match a.kind {
        KindArg::LeastSquares => ProbeKind::LeastSquares,
        KindArg::Logistic => ProbeKind::Logistic,
    };
    let mut probe = LinearProbe::new(kind).label_column(match a.label {
        LabelArg::Label => LabelColumn::Label,
        LabelArg::Coarse => LabelColumn::Coarse,
    });
    if let Some(l) = a.penalty {
        probe = probe.penalty(l);
    }
    let epochs = a.epoch.map(|e| vec![e]);
    let reports = probe_scan(&scan, &probe, epochs.as_deref())?;
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
        reference: match a.reference {
            RefArg::Own => ReferenceChoice::Own,
            RefArg::Train => ReferenceChoice::Train,
        },
        global_mean: match a.global_mean {
            GlobalArg::Class => GlobalMean::ClassMeans,
            GlobalArg::Sample => GlobalMean::SampleWeighted,
        },
        tolerance: a.tolerance,
        classifier: a.classifier.clone(),
    };
    let reports = measure_scan(&scan, &options)?;
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
    let names: Vec<&str> = first.metrics().iter().map(|(k, _)| *k).collect();
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
    out
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Metrics(a) => run_metrics(a),
        Command::Probe(a) => run_probe(a),
    };
    match result {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            let msg = e.to_string().replace('\n', " ");
            eprintln!("error: {msg}");
            ExitCode::from(2)
        }
    }
}
