//! Writes every generated kernel of a preset to a directory (development aid;
//! `lucebox-gen` is the user-facing tool).
fn main() {
    let mut args = std::env::args().skip(1);
    let preset = args.next().unwrap_or_else(|| "h100".into());
    let out = args.next().unwrap_or_else(|| "/tmp/lucebox-kernels".into());
    let model = args.next().unwrap_or_else(|| "qwen3.5-0.8b".into());
    let cfg = lucebox_models::config::Qwen35Config::builtin(&model).unwrap_or_else(|| {
        eprintln!("unknown model {model}");
        std::process::exit(2)
    });
    let sched = match lucebox_schedules::Schedule::preset(&preset) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2)
        }
    };
    if let Err(e) = std::fs::create_dir_all(&out) {
        eprintln!("{e}");
        std::process::exit(1)
    }
    for kind in lucebox_codegen::KernelKind::ALL {
        match lucebox_codegen::generate(&cfg, &sched, kind) {
            Ok(k) => {
                let p = format!("{out}/{}", k.file_name);
                if let Err(e) = std::fs::write(&p, &k.source) {
                    eprintln!("{p}: {e}");
                }
                println!("{p}");
            }
            Err(e) => eprintln!("{kind}: {e}"),
        }
    }
}
