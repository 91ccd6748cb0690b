use clap::Parser;

mod cli;

fn main() {
    // Before any tensor work: candle reads this once per thread.
    facegan::enable_second_order_gradients();
    let args = cli::Cli::parse();
    if let Err(e) = cli::run(args) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
