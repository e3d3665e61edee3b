//! `lucebox-gen`: emit the CUDA kernels for a chip. (Stub.)

fn main() -> std::process::ExitCode {
    eprintln!("lucebox-gen is not implemented yet");
    std::process::ExitCode::FAILURE
}
