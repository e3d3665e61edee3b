//! GPU energy through NVML: the total-energy counter (Volta and later) read
//! around a region, or, where the board lacks it, a thread sampling power
//! every few milliseconds. No NVML, no permission or no sensor is
//! [`RuntimeError::EnergyUnavailable`], never a panic.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nvml_wrapper::Nvml;
use serde::{Deserialize, Serialize};

use crate::device::DeviceInfo;
use crate::error::{Result, RuntimeError};

const SAMPLE_PERIOD: Duration = Duration::from_millis(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnergyMethod {
    /// `nvmlDeviceGetTotalEnergyConsumption` before and after.
    TotalEnergyCounter,
    /// Mean of `nvmlDeviceGetPowerUsage` samples times the wall time.
    PowerSampling,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EnergyReading {
    pub joules: f64,
    pub seconds: f64,
    pub avg_watts: f64,
    pub method: EnergyMethod,
    /// Power samples taken (0 for the counter method).
    pub samples: usize,
}

/// NVML handle bound to one GPU.
pub struct EnergyMeter {
    nvml: Arc<Nvml>,
    device_key: DeviceKey,
    has_counter: bool,
}

#[derive(Clone)]
enum DeviceKey {
    Uuid(String),
    PciBusId(String),
}

impl std::fmt::Debug for EnergyMeter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnergyMeter")
            .field("has_counter", &self.has_counter)
            .finish()
    }
}

fn unavailable(what: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::EnergyUnavailable(what.to_string())
}

fn device<'n>(nvml: &'n Nvml, key: &DeviceKey) -> Result<nvml_wrapper::Device<'n>> {
    match key {
        DeviceKey::Uuid(u) => nvml.device_by_uuid(u.as_str()),
        DeviceKey::PciBusId(p) => nvml.device_by_pci_bus_id(p.as_str()),
    }
    .map_err(|e| unavailable(format!("NVML cannot find the device: {e}")))
}

impl EnergyMeter {
    /// Opens NVML for the device described by `info`.
    pub fn new(info: &DeviceInfo) -> Result<Self> {
        let nvml = std::panic::catch_unwind(Nvml::init)
            .map_err(|_| unavailable("NVML initialisation panicked"))?
            .map_err(|e| unavailable(format!("NVML (libnvidia-ml.so.1) not usable: {e}")))?;
        let device_key = if info.uuid != [0; 16] {
            DeviceKey::Uuid(info.uuid_string())
        } else {
            DeviceKey::PciBusId(info.pci_bus_id.clone())
        };
        let (has_counter, has_power) = {
            let d = device(&nvml, &device_key)?;
            (
                d.total_energy_consumption().is_ok(),
                d.power_usage().is_ok(),
            )
        };
        if !has_counter && !has_power {
            return Err(unavailable(
                "this GPU reports neither an energy counter nor power usage",
            ));
        }
        Ok(Self {
            nvml: Arc::new(nvml),
            device_key,
            has_counter,
        })
    }

    pub fn method(&self) -> EnergyMethod {
        if self.has_counter {
            EnergyMethod::TotalEnergyCounter
        } else {
            EnergyMethod::PowerSampling
        }
    }

    /// Starts measuring; [`EnergyRegion::stop`] ends it.
    pub fn start(&self) -> Result<EnergyRegion> {
        let t0 = Instant::now();
        if self.has_counter {
            let mj = device(&self.nvml, &self.device_key)?
                .total_energy_consumption()
                .map_err(|e| unavailable(format!("energy counter: {e}")))?;
            return Ok(EnergyRegion {
                nvml: self.nvml.clone(),
                key: self.device_key.clone(),
                t0,
                start_mj: Some(mj),
                sampler: None,
            });
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (nvml, key, flag) = (self.nvml.clone(), self.device_key.clone(), stop.clone());
        let handle = std::thread::Builder::new()
            .name("lucebox-power".into())
            .spawn(move || {
                let mut mw = Vec::new();
                if let Ok(d) = device(&nvml, &key) {
                    while !flag.load(Ordering::Relaxed) {
                        if let Ok(p) = d.power_usage() {
                            mw.push(p);
                        }
                        std::thread::sleep(SAMPLE_PERIOD);
                    }
                }
                mw
            })
            .map_err(|e| unavailable(format!("cannot start the power sampler: {e}")))?;
        Ok(EnergyRegion {
            nvml: self.nvml.clone(),
            key: self.device_key.clone(),
            t0,
            start_mj: None,
            sampler: Some((handle, stop)),
        })
    }

    /// Measures the energy of `f`; the closure's own result is kept even
    /// when energy cannot be measured.
    pub fn measure<R>(&self, f: impl FnOnce() -> R) -> (R, Result<EnergyReading>) {
        match self.start() {
            Ok(region) => {
                let r = f();
                (r, region.stop())
            }
            Err(e) => (f(), Err(e)),
        }
    }
}

/// A running measurement.
pub struct EnergyRegion {
    nvml: Arc<Nvml>,
    key: DeviceKey,
    t0: Instant,
    start_mj: Option<u64>,
    sampler: Option<(JoinHandle<Vec<u32>>, Arc<AtomicBool>)>,
}

impl EnergyRegion {
    pub fn stop(self) -> Result<EnergyReading> {
        let seconds = self.t0.elapsed().as_secs_f64();
        if let Some(start) = self.start_mj {
            let end = device(&self.nvml, &self.key)?
                .total_energy_consumption()
                .map_err(|e| unavailable(format!("energy counter: {e}")))?;
            let joules = end.saturating_sub(start) as f64 / 1e3;
            return Ok(EnergyReading {
                joules,
                seconds,
                avg_watts: if seconds > 0.0 { joules / seconds } else { 0.0 },
                method: EnergyMethod::TotalEnergyCounter,
                samples: 0,
            });
        }
        let (handle, stop) = self
            .sampler
            .ok_or_else(|| unavailable("no sampler running"))?;
        stop.store(true, Ordering::Relaxed);
        let mw = handle
            .join()
            .map_err(|_| unavailable("the power sampler panicked"))?;
        reading_from_samples(&mw, seconds)
    }
}

fn reading_from_samples(milliwatts: &[u32], seconds: f64) -> Result<EnergyReading> {
    if milliwatts.is_empty() {
        return Err(unavailable(
            "no power sample was taken (region shorter than the sampling period?)",
        ));
    }
    let avg_watts =
        milliwatts.iter().map(|&m| m as f64).sum::<f64>() / milliwatts.len() as f64 / 1e3;
    Ok(EnergyReading {
        joules: avg_watts * seconds,
        seconds,
        avg_watts,
        method: EnergyMethod::PowerSampling,
        samples: milliwatts.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_samples_integrate_to_joules() {
        let r = reading_from_samples(&[100_000, 300_000], 2.0).expect("reading");
        assert_eq!(r.avg_watts, 200.0);
        assert_eq!(r.joules, 400.0);
        assert_eq!(r.samples, 2);
        assert!(reading_from_samples(&[], 1.0).is_err());
    }
}
