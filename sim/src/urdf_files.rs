//! Where an arm's files come from: the disk, or the binary itself.
//!
//! The SO-101 that ships with Cerebellum is compiled into the binary: its
//! URDF, its robot config (`so101_new_calib.toml`, the actuator gains) and
//! the thirteen STL meshes the URDF names (about 16 MB, read for the
//! collision hulls and for the camera). A `cerebellum` copied to a robot's
//! board therefore needs no source tree, and nothing is unpacked to disk:
//! the embedded arm has a path like any other, under the virtual root
//! [`EMBEDDED_ROOT`] (`<embedded>/so101/so101_new_calib.urdf`), and every
//! read of an arm's files (URDF, robot config, meshes) goes through [`read`],
//! which serves paths under that root from memory and every other path
//! from disk. Relative mesh paths, `package://` URIs and the robot config
//! beside the URDF resolve inside the embedded tree exactly as on disk.
//!
//! The MuJoCo files of the same arm (`scene.xml`, `so101_new_calib.xml`)
//! are not embedded: only `cerebellum bench physics` reads them, for its
//! MuJoCo peer, and it takes `--mjcf PATH`.

use std::borrow::Cow;
use std::path::{Component, Path, PathBuf};

/// The first component of every embedded file's path. Not a directory on
/// any disk: a path that starts with it is never looked up there.
pub const EMBEDDED_ROOT: &str = "<embedded>";

/// One file compiled into the binary, by its path under [`EMBEDDED_ROOT`].
struct EmbeddedFile {
    path: &'static str,
    bytes: &'static [u8],
}

/// The files of `sim/robots/so101` that loading the arm reads, compiled in.
macro_rules! so101_files {
    ($($file:literal),* $(,)?) => {
        &[$(EmbeddedFile {
            path: concat!("so101/", $file),
            bytes: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/robots/so101/", $file)),
        }),*]
    };
}

static FILES: &[EmbeddedFile] = so101_files![
    "so101_new_calib.urdf",
    "so101_new_calib.toml",
    "assets/base_motor_holder_so101_v1.stl",
    "assets/base_so101_v2.stl",
    "assets/motor_holder_so101_base_v1.stl",
    "assets/motor_holder_so101_wrist_v1.stl",
    "assets/moving_jaw_so101_v1.stl",
    "assets/rotation_pitch_so101_v1.stl",
    "assets/sts3215_03a_no_horn_v1.stl",
    "assets/sts3215_03a_v1.stl",
    "assets/under_arm_so101_v1.stl",
    "assets/upper_arm_so101_v1.stl",
    "assets/waveshare_mounting_plate_so101_v2.stl",
    "assets/wrist_roll_follower_so101_v1.stl",
    "assets/wrist_roll_pitch_so101_v2.stl",
];

/// The SO-101 arm that ships with Cerebellum, embedded in the binary:
/// `<embedded>/so101/so101_new_calib.urdf`. `ArmModel::load` and
/// `RobotConfig::from_file` read it from memory.
pub fn so101_urdf() -> PathBuf {
    Path::new(EMBEDDED_ROOT).join("so101/so101_new_calib.urdf")
}

/// The SO-101's folder in the source tree this crate was built from
/// (`sim/robots/so101`): for tests and tools that compare against the files
/// on disk or need the ones not embedded (the MuJoCo model). A binary must
/// not depend on it; it may not exist where the binary runs.
pub fn so101_source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("robots/so101")
}

/// Whether `path` names a file embedded in the binary (it starts with
/// [`EMBEDDED_ROOT`]), whether or not such a file exists.
pub fn is_embedded(path: &Path) -> bool {
    path.starts_with(EMBEDDED_ROOT)
}

/// The embedded file's key (`so101/assets/x.stl`) for a path under
/// [`EMBEDDED_ROOT`], with `.` and `..` resolved lexically.
fn key(path: &Path) -> Option<String> {
    let rest = path.strip_prefix(EMBEDDED_ROOT).ok()?;
    let mut parts: Vec<&str> = Vec::new();
    for component in rest.components() {
        match component {
            Component::Normal(part) => parts.push(part.to_str()?),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(parts.join("/"))
}

fn embedded(path: &Path) -> Option<&'static [u8]> {
    let key = key(path)?;
    FILES.iter().find(|f| f.path == key).map(|f| f.bytes)
}

/// The bytes of `path`: from the binary for a path under
/// [`EMBEDDED_ROOT`] (an error if no such file is embedded), else from
/// disk, where only a regular file is read: a directory is an error, and
/// so is a FIFO or a device, which could block the reader forever. The
/// signature fits `mesh_loader::Loader::with_custom_reader`.
pub fn read(path: &Path) -> std::io::Result<Cow<'static, [u8]>> {
    if !is_embedded(path) {
        let metadata = std::fs::metadata(path)?;
        if !metadata.is_file() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                if metadata.is_dir() {
                    "is a directory, expected a file"
                } else {
                    "is not a regular file"
                },
            ));
        }
        return std::fs::read(path).map(Cow::Owned);
    }
    embedded(path).map(Cow::Borrowed).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "no file {} is embedded in this binary (embedded: {})",
                path.display(),
                embedded_paths()
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    })
}

/// [`read`] as UTF-8 text.
pub fn read_to_string(path: &Path) -> std::io::Result<String> {
    let bytes = read(path)?;
    String::from_utf8(bytes.into_owned())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Whether [`read`] would find a file at `path`.
pub fn is_file(path: &Path) -> bool {
    if is_embedded(path) {
        embedded(path).is_some()
    } else {
        path.is_file()
    }
}

/// Every embedded file's path, under [`EMBEDDED_ROOT`].
pub fn embedded_paths() -> Vec<PathBuf> {
    FILES
        .iter()
        .map(|f| Path::new(EMBEDDED_ROOT).join(f.path))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The embedded files are the source tree's, byte for byte.
    #[test]
    fn embedded_files_are_the_source_trees() {
        for file in FILES {
            let relative = file.path.strip_prefix("so101/").unwrap();
            let on_disk = std::fs::read(so101_source_dir().join(relative)).unwrap();
            assert!(on_disk == file.bytes, "{} differs", file.path);
        }
    }

    #[test]
    fn embedded_paths_resolve_lexically_and_never_touch_the_disk() {
        let urdf = so101_urdf();
        assert!(is_embedded(&urdf) && is_file(&urdf));
        let dir = urdf.parent().unwrap();
        assert!(is_file(&dir.join("./assets/../assets/base_so101_v2.stl")));
        assert!(!is_file(&dir.join("assets/missing.stl")));
        assert!(!is_file(&dir.join("../../../etc/passwd")));
        let error = read(&dir.join("scene.xml")).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::NotFound);
        assert!(
            error.to_string().contains("<embedded>/so101/scene.xml"),
            "{error}"
        );
        assert!(!is_embedded(Path::new("robots/so101/so101_new_calib.urdf")));
    }
}
