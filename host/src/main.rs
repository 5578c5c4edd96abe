fn main() -> std::process::ExitCode {
    bridge::cli::main()
}
