//! Entry point: parse the command line, run, exit with the code of docs/reference.md ("Exit codes").
//!
//! Everything else is in the library (`commands::main` loads the configuration,
//! sets up logging, builds one current-thread runtime and runs the command).

fn main() {
    let code = match patroni_hook::cli::parse(std::env::args_os()) {
        Err(e) => {
            eprintln!("patroni-hook: {e}");
            e.exit_code()
        }
        Ok(Err(text)) => {
            patroni_hook::out::text(&text);
            0
        }
        Ok(Ok(invocation)) => patroni_hook::commands::main(invocation),
    };
    std::process::exit(code);
}
