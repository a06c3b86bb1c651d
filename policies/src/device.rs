//! Choosing where candle models run. Asking for CUDA either gives a CUDA
//! device or an error that says why: never a silent fall-back to the CPU,
//! which would turn a 20 ms policy into a 2 s one on the robot.

use candle_core::Device;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    Cpu,
    Cuda(usize),
}

pub fn device(kind: DeviceKind) -> Result<Device, String> {
    match kind {
        DeviceKind::Cpu => Ok(Device::Cpu),
        DeviceKind::Cuda(ordinal) => cuda(ordinal),
    }
}

#[cfg(feature = "cuda")]
fn cuda(ordinal: usize) -> Result<Device, String> {
    Device::new_cuda(ordinal).map_err(|e| format!("CUDA device {ordinal} is not usable: {e}"))
}

#[cfg(not(feature = "cuda"))]
fn cuda(ordinal: usize) -> Result<Device, String> {
    Err(format!(
        "CUDA device {ordinal} requested, but this binary was built without the `cuda` feature \
         (rebuild with `--features cerebellum-policies/cuda`)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_is_an_error() {
        let err = device(DeviceKind::Cuda(0)).unwrap_err();
        assert!(err.contains("without the `cuda` feature"), "{err}");
    }
}
