//! Prints the three findings' checks on the bundled studies (seeds 0–4 of each preset):
//! `cargo run --release --example findings`.
use neural_collapse::findings::studies::{CascadeStudy, TrainTestStudy, TransferStudy};
use neural_collapse::study::Study;

fn main() -> neural_collapse::Result<()> {
    for dataset in ["mnist", "fashion-mnist"] {
        let s = Study::open("data/runs", "train-test", dataset)?;
        println!("{}", TrainTestStudy::measure(&s)?.check());
    }
    let t = TransferStudy::measure(&Study::open("data/runs", "transfer", "fashion-mnist")?)?;
    for s in t.seeds() {
        println!(
            "  seed {}: chosen epoch {:?} {:.2} %, last {:.2} %, epoch 0 {:.2} %",
            s.seed, s.chosen, s.acc_chosen, s.acc_last, s.acc_init
        );
    }
    println!("{}", t.check());
    let c = CascadeStudy::measure(&Study::open("data/runs", "cascade", "mnist")?)?;
    println!("{}", c.check());
    Ok(())
}
