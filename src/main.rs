use clap::Parser;

mod cli;

fn main() {
    // Before any tensor work: candle reads these once.
    facegan::init();
    let args = cli::Cli::parse();
    if let Err(e) = cli::run(args) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
