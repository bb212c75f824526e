//! Every kernel compiles with NVRTC (through cudarc's dynamically loaded
//! libnvrtc) and with nvcc + ptxas for sm_80 and sm_90, with no register
//! spills. Needs `CHRONOS_CUDA_HOME` (the CUDA wheels: bin/nvcc, bin/ptxas,
//! include/, lib/libnvrtc.so.13 on LD_LIBRARY_PATH); `scripts/test-all`
//! installs and exports them. Skips with a message only outside CI.

use super::in_ci;
use chronos_sync::backend::cuda::kernels::{Kernel, Module};
use chronos_sync::backend::cuda::{cuda_include_dirs, nvrtc_available, nvrtc_ptx};
use std::path::{Path, PathBuf};
use std::process::Command;

const ARCHS: [&str; 2] = ["sm_80", "sm_90"];

fn missing(what: &str) {
    assert!(!in_ci(), "CI=true but {what} is missing: the CUDA compile checks may not skip");
    eprintln!("SKIPPED: {what} is missing (set CHRONOS_CUDA_HOME, see scripts/test-all)");
}

fn cuda_home() -> Option<PathBuf> {
    let home = PathBuf::from(std::env::var_os("CHRONOS_CUDA_HOME")?);
    home.join("bin/ptxas").is_file().then_some(home)
}

fn scratch_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("chronos-cuda-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Per-kernel resource usage from `ptxas -v`.
#[derive(Debug, Default, Clone)]
struct Usage {
    name: String,
    registers: u32,
    smem: u32,
    spill_stores: u32,
    spill_loads: u32,
    stack: u32,
}

fn number_before(line: &str, marker: &str) -> Option<u32> {
    let head = &line[..line.find(marker)?];
    head.split_whitespace().last()?.parse().ok()
}

fn parse_ptxas(log: &str) -> Vec<Usage> {
    let mut out: Vec<Usage> = Vec::new();
    for line in log.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let name = rest.split('\'').next().unwrap_or("").to_string();
            out.push(Usage { name, ..Usage::default() });
            continue;
        }
        let Some(cur) = out.last_mut() else { continue };
        if line.contains("spill stores") {
            cur.stack = number_before(line, "bytes stack frame").unwrap_or(u32::MAX);
            cur.spill_stores = number_before(line, "bytes spill stores").unwrap_or(u32::MAX);
            cur.spill_loads = number_before(line, "bytes spill loads").unwrap_or(u32::MAX);
        }
        if line.contains("Used") && line.contains("registers") {
            cur.registers = number_before(line, "registers").unwrap_or(u32::MAX);
            cur.smem = number_before(line, "bytes smem").unwrap_or(0);
        }
    }
    out
}

fn ptxas(home: &Path, arch: &str, ptx: &Path) -> Vec<Usage> {
    let out = Command::new(home.join("bin/ptxas"))
        .args(["-v", &format!("-arch={arch}"), "-o", "/dev/null"])
        .arg(ptx)
        .output()
        .expect("run ptxas");
    let log = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "ptxas {arch} {} failed:\n{log}", ptx.display());
    parse_ptxas(&log)
}

fn check_module(module: Module, arch: &str, usage: &[Usage], via: &str) {
    for k in Kernel::ALL.iter().filter(|k| k.module() == module) {
        let u = usage.iter().find(|u| u.name == k.name());
        let u = u.unwrap_or_else(|| panic!("{via} {arch}: ptxas did not report {}", k.name()));
        println!(
            "{via:5} {arch} {:17} registers {:3}  smem {:5} B  stack {} B  spill stores {} B  spill loads {} B",
            u.name, u.registers, u.smem, u.stack, u.spill_stores, u.spill_loads
        );
        assert_eq!((u.spill_stores, u.spill_loads), (0, 0), "{via} {arch} {} spills", u.name);
        assert!(u.registers <= 128, "{via} {arch} {} uses {} registers", u.name, u.registers);
    }
}

#[test]
fn every_kernel_compiles_with_nvrtc() {
    if !nvrtc_available() {
        return missing("libnvrtc (LD_LIBRARY_PATH=$CHRONOS_CUDA_HOME/lib)");
    }
    assert!(!cuda_include_dirs().is_empty() || !in_ci(), "no CUDA include directory for cuda_fp16.h");
    let home = cuda_home();
    let dir = scratch_dir("nvrtc");
    for arch in ARCHS {
        for module in Module::ALL {
            let ptx = nvrtc_ptx(module, arch).unwrap_or_else(|e| panic!("NVRTC {arch} {}: {e}", module.stem()));
            for k in Kernel::ALL.iter().filter(|k| k.module() == module) {
                assert!(ptx.contains(&format!(".entry {}(", k.name())), "NVRTC PTX lacks {}", k.name());
            }
            if let Some(home) = &home {
                let path = dir.join(format!("{}-{arch}.ptx", module.stem()));
                std::fs::write(&path, &ptx).unwrap();
                check_module(module, arch, &ptxas(home, arch, &path), "nvrtc");
            }
        }
    }
    if home.is_none() {
        missing("ptxas (CHRONOS_CUDA_HOME/bin/ptxas)");
    }
}

#[test]
fn nvcc_and_ptxas_report_no_spills() {
    let Some(home) = cuda_home() else {
        return missing("nvcc/ptxas (CHRONOS_CUDA_HOME/bin)");
    };
    let kernels = Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels");
    let dir = scratch_dir("nvcc");
    for arch in ARCHS {
        for module in Module::ALL {
            let ptx = dir.join(format!("{}-{arch}.ptx", module.stem()));
            let mut cmd = Command::new(home.join("bin/nvcc"));
            cmd.args([&format!("-arch={arch}"), "-ptx", "-O3"]);
            for inc in [home.join("include"), home.join("include/cccl")] {
                cmd.arg(format!("-I{}", inc.display()));
            }
            let out = cmd.arg(kernels.join(format!("{}.cu", module.stem()))).arg("-o").arg(&ptx).output().unwrap();
            assert!(out.status.success(), "nvcc {arch} {}:\n{}", module.stem(), String::from_utf8_lossy(&out.stderr));
            check_module(module, arch, &ptxas(&home, arch, &ptx), "nvcc");
        }
    }
}
