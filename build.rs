//! Build script: the CUDA kernels in `kernels/`.
//!
//! - Feature `cuda-emu`: compiles `kernels/*.cu` as host C++17 against
//!   `kernels/emu/cuda_emu.h` (force-included) into a static library whose
//!   `cs_emu_launch` runs them on the CPU.
//! - Feature `cuda`: when `nvcc` is found (`CHRONOS_CUDA_HOME`, `CUDA_HOME`,
//!   `CUDA_PATH` or `PATH`), compiles each kernel module to PTX for
//!   `CUDA_COMPUTE_CAP` (default 80; 90 builds `sm_90a`) and sets the cfg
//!   `chronos_embedded_ptx`; otherwise the backend compiles the sources with
//!   NVRTC at first use. A failing nvcc is a warning, never a build error,
//!   because NVRTC remains available at run time.
use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const MODULES: [&str; 4] = ["fused", "select_pack", "apply", "validate"];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=kernels");
    println!("cargo::rustc-check-cfg=cfg(chronos_embedded_ptx)");
    for var in ["CUDA_COMPUTE_CAP", "CHRONOS_CUDA_HOME", "CUDA_HOME", "CUDA_PATH", "PATH"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    if env::var_os("CARGO_FEATURE_CUDA_EMU").is_some() {
        build_emulation();
    }
    if env::var_os("CARGO_FEATURE_CUDA").is_some() {
        embed_ptx();
    }
}

fn build_emulation() {
    cc::Build::new()
        .cpp(true)
        .std("c++17")
        .file("kernels/emu/launch.cpp")
        .include("kernels/emu")
        .include("kernels")
        .flag("-include")
        .flag("kernels/emu/cuda_emu.h")
        // One IEEE operation per source operation, as __fadd_rn/__fmul_rn promise.
        .flag_if_supported("-ffp-contract=off")
        .flag_if_supported("-fno-fast-math")
        .flag_if_supported("-pthread")
        .flag_if_supported("-Wno-unknown-pragmas")
        .opt_level(2)
        .compile("chronos_cuda_emu");
}

fn find_nvcc() -> Option<PathBuf> {
    for var in ["CHRONOS_CUDA_HOME", "CUDA_HOME", "CUDA_PATH"] {
        if let Some(home) = env::var_os(var) {
            let p = Path::new(&home).join("bin").join("nvcc");
            if p.is_file() {
                return Some(p);
            }
        }
    }
    env::split_paths(&env::var_os("PATH")?).map(|d| d.join("nvcc")).find(|p| p.is_file())
}

/// `sm_XX` for a compute capability such as `80`, `8.6` or `90` (Hopper gets
/// `sm_90a` for its architecture-specific features).
fn arch_for(cap: &str) -> Option<String> {
    let digits: String = cap.chars().filter(|c| c.is_ascii_digit()).collect();
    match digits.as_str() {
        "" => None,
        "90" => Some("sm_90a".into()),
        d => Some(format!("sm_{d}")),
    }
}

fn embed_ptx() {
    let Some(nvcc) = find_nvcc() else {
        println!("cargo:warning=nvcc not found: CUDA kernels will be compiled with NVRTC at first use");
        return;
    };
    let cap = env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "80".into());
    let Some(arch) = arch_for(&cap) else {
        println!("cargo:warning=CUDA_COMPUTE_CAP={cap} is not a compute capability; using NVRTC");
        return;
    };
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let home = nvcc.parent().and_then(Path::parent).map(Path::to_path_buf);
    for module in MODULES {
        let mut cmd = Command::new(&nvcc);
        cmd.arg(format!("-arch={arch}")).arg("-ptx").arg("-O3").arg("--fmad=false").arg("-Ikernels");
        if let Some(home) = &home {
            cmd.arg(format!("-I{}", home.join("include").display()));
            cmd.arg(format!("-I{}", home.join("include").join("cccl").display()));
        }
        cmd.arg(format!("kernels/{module}.cu")).arg("-o").arg(out.join(format!("{module}.ptx")));
        match cmd.output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => {
                println!(
                    "cargo:warning=nvcc failed on kernels/{module}.cu ({}); using NVRTC at run time",
                    String::from_utf8_lossy(&o.stderr).lines().next().unwrap_or("")
                );
                return;
            }
            Err(e) => {
                println!("cargo:warning=could not run {}: {e}; using NVRTC at run time", nvcc.display());
                return;
            }
        }
    }
    println!("cargo:rustc-cfg=chronos_embedded_ptx");
    println!("cargo:rustc-env=CHRONOS_PTX_ARCH={arch}");
}
