//! Prints the three findings' checks on the bundled runs: `cargo run --example findings`.
use neural_collapse::features::Run;
use neural_collapse::findings::{Cascade, TrainTestCollapse, Transfer};

fn main() -> neural_collapse::Result<()> {
    for name in ["mnist-train-test", "fashion-mnist-train-test"] {
        let run = Run::open(format!("data/runs/{name}"))?;
        println!("{}", TrainTestCollapse::measure(&run)?.check());
    }
    let t = Transfer::measure(&Run::open("data/runs/fashion-mnist-transfer")?)?;
    for p in t.points() {
        println!(
            "  epoch {:>3}: source NC1 {:.4}, fine probe {:.4}",
            p.0, p.1, p.2
        );
    }
    println!("{}", t.check());
    println!(
        "{}",
        Cascade::measure(&Run::open("data/runs/mnist-cascade")?)?.check()
    );
    Ok(())
}
