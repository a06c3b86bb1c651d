//! The software camera: a CPU ray caster that renders an `ArmWorld` to an
//! RGB image.
//!
//! One ray per pixel is cast against the arm's visual triangle meshes (posed
//! from the physics bodies), the cube, and the table top (an analytic plane
//! with a checker pattern, so depth is visible). Per frame, each shape's
//! world AABB is computed once and projected to a pixel rectangle; a pixel
//! only tries the shapes whose rectangle covers it, nearest box first, and
//! rejects each by a slab test before the exact parry ray cast. Shading is
//! Lambert with one fixed directional light plus ambient, with hard shadows
//! (one shadow ray per lit surface point); there is no randomness and no
//! threading, so the same world renders to bit-identical bytes.
//!
//! Rendering takes `&ArmWorld` and `&Camera` only, so several worlds may be
//! rendered on several threads at once.

use crate::world::ArmWorld;
use cerebellum_core::Image;
use cerebellum_core::bounds::{Limits, check_name, refusal};
use rapier3d::math::{Pose, Rotation, Vector};
use rapier3d::parry::query::Ray;
use rapier3d::parry::shape::Shape;
use std::path::Path;

/// Where a camera sits and what it sees.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CameraConfig {
    /// Name carried by every image (`Image::camera`).
    pub name: String,
    /// Pixels.
    pub width: u32,
    pub height: u32,
    /// Vertical field of view (degrees), strictly between 1 and 179.
    pub fov_y_degrees: f32,
    /// Camera position in the world (m; the world is Z-up).
    pub eye: [f32; 3],
    /// The point at the centre of the image.
    pub look_at: [f32; 3],
    /// Which way is up in the image; must not be parallel to the view.
    pub up: [f32; 3],
}

impl Default for CameraConfig {
    /// A front-right view of an arm at the origin reaching along +x, with
    /// the workspace in front of it.
    fn default() -> Self {
        Self {
            name: "front".into(),
            width: 64,
            height: 64,
            fov_y_degrees: 45.0,
            eye: [0.62, -0.42, 0.36],
            look_at: [0.2, 0.0, 0.1],
            up: [0.0, 0.0, 1.0],
        }
    }
}

/// Largest accepted width or height: a CPU ray caster renders every tick,
/// and 1024² rays already take a good part of a second.
pub const MAX_IMAGE_SIDE: u32 = 1024;
pub const IMAGE_SIDE: Limits<u32> = Limits::closed(1, MAX_IMAGE_SIDE).unit("px");
pub const FOV_Y_DEGREES: Limits<f32> = Limits::open(1.0, 179.0).unit("degrees");
/// Each coordinate of `eye`, `look_at` and `up`.
pub const CAMERA_COORDINATE: Limits<f32> = Limits::closed(-100.0, 100.0).unit("m");

impl CameraConfig {
    /// Bounds on every key (`camera.*`): a name that is one zenoh key chunk,
    /// a positive size of at most `MAX_IMAGE_SIDE`, a field of view in
    /// (1°, 179°), finite vectors within ±100 m, an eye away from the
    /// look-at point and an up vector not parallel to the view.
    pub fn validate(&self) -> Result<(), String> {
        self.validate_at("camera")
    }

    /// `validate` with the keys under `key` (`camera[1].width`).
    pub fn validate_at(&self, key: &str) -> Result<(), String> {
        check_name(&format!("{key}.name"), &self.name)?;
        IMAGE_SIDE.check(&format!("{key}.width"), self.width)?;
        IMAGE_SIDE.check(&format!("{key}.height"), self.height)?;
        FOV_Y_DEGREES.check(&format!("{key}.fov_y_degrees"), self.fov_y_degrees)?;
        for (field, v) in [
            ("eye", self.eye),
            ("look_at", self.look_at),
            ("up", self.up),
        ] {
            if !v.iter().all(|&c| CAMERA_COORDINATE.contains(c)) {
                return Err(refusal(
                    &format!("{key}.{field}"),
                    v,
                    &format!(
                        "the camera's {field} must be finite, each coordinate {}",
                        CAMERA_COORDINATE.describe()
                    ),
                ));
            }
        }
        let eye = Vector::from(self.eye);
        let view = Vector::from(self.look_at) - eye;
        if view.length() < 1e-6 {
            return Err(refusal(
                &format!("{key}.look_at"),
                self.look_at,
                "the camera's eye and look_at must differ",
            ));
        }
        let up = Vector::from(self.up);
        let side = view.normalize().cross(up);
        if up.length() < 1e-6 || side.length() < 1e-6 * up.length() {
            return Err(refusal(
                &format!("{key}.up"),
                self.up,
                &format!(
                    "must be non-zero and not parallel to the view from {:?} to {:?}",
                    self.eye, self.look_at
                ),
            ));
        }
        Ok(())
    }
}

/// How many cameras one environment may have.
pub const CAMERA_COUNT: Limits<usize> = Limits::closed(0, 8).unit("cameras");

/// The check of an environment's cameras (`[[camera]]`): at most
/// `CAMERA_COUNT`, each valid (keys `camera.*` for a single camera,
/// `camera[i].*` for several), names unique.
pub fn validate_cameras(cameras: &[CameraConfig]) -> Result<(), String> {
    CAMERA_COUNT.check("camera", cameras.len())?;
    for (i, camera) in cameras.iter().enumerate() {
        camera.validate_at(&camera_key(cameras.len(), i))?;
        if let Some(first) = cameras[..i].iter().position(|c| c.name == camera.name) {
            return Err(refusal(
                &format!("{}.name", camera_key(cameras.len(), i)),
                &camera.name,
                &format!(
                    "camera names must be unique: `{}` is already the name of camera[{first}]",
                    camera.name
                ),
            ));
        }
    }
    Ok(())
}

/// The TOML path of camera `i` of `count`.
fn camera_key(count: usize, i: usize) -> String {
    if count == 1 {
        "camera".into()
    } else {
        format!("camera[{i}]")
    }
}

/// Reads `camera` as one table (`[camera]`, the older single-camera form)
/// or an array of tables (`[[camera]]`); an error inside a table names the
/// key as serde does for any other table.
pub fn one_or_many<'de, D>(deserializer: D) -> Result<Vec<CameraConfig>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct OneOrMany;
    impl<'de> serde::de::Visitor<'de> for OneOrMany {
        type Value = Vec<CameraConfig>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a camera table (`[camera]`) or an array of them (`[[camera]]`)")
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            use serde::Deserialize;
            CameraConfig::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                .map(|c| vec![c])
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            use serde::Deserialize;
            Vec::<CameraConfig>::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
        }

        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }

        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
    }
    deserializer.deserialize_any(OneOrMany)
}

/// Rays stop here (m).
const FAR: f32 = 100.0;
/// Half extent of the table top in x and y (m), as in `ArmWorld::new`.
const TABLE_HALF_EXTENT: f32 = 2.0;
/// Edge of one table checker square (m).
const CHECKER: f32 = 0.1;
const TABLE_LIGHT: [f32; 3] = [0.62, 0.58, 0.52];
const TABLE_DARK: [f32; 3] = [0.50, 0.46, 0.41];
/// The cube's colour: a red no URDF material here uses.
pub const CUBE_RGB: [f32; 3] = [0.85, 0.08, 0.08];
const SKY_HORIZON: [f32; 3] = [0.80, 0.86, 0.93];
const SKY_ZENITH: [f32; 3] = [0.45, 0.62, 0.86];
/// Direction towards the light (normalised at use).
const LIGHT: [f32; 3] = [-0.4, -0.15, 1.0];
/// How far a shadow ray starts off its surface (m), against self-shadowing
/// from rounding.
const SHADOW_BIAS: f32 = 1e-4;
/// How far shadow rays look for an occluder (m).
const SHADOW_REACH: f32 = 10.0;
const AMBIENT: f32 = 0.35;
const DIFFUSE: f32 = 0.65;

/// A pinhole camera, validated and with its view basis precomputed.
#[derive(Clone, Debug)]
pub struct Camera {
    config: CameraConfig,
    eye: Vector,
    forward: Vector,
    right: Vector,
    up: Vector,
    /// tan(fov_y / 2).
    tan_half_fov: f32,
    /// width / height.
    aspect: f32,
}

/// One shape of the frame, with its world AABB.
struct Item<'a> {
    pose: Pose,
    shape: &'a dyn Shape,
    rgb: [f32; 3],
    mins: Vector,
    maxs: Vector,
}

impl Camera {
    /// Checks the config: a positive size of at most `MAX_IMAGE_SIDE`, a
    /// field of view in (1°, 179°), finite vectors, an eye away from the
    /// look-at point and an up vector not parallel to the view.
    pub fn new(config: CameraConfig) -> Result<Self, String> {
        config
            .validate()
            .map_err(|e| format!("camera `{}`: {e}", config.name))?;
        let fov = config.fov_y_degrees;
        let eye = Vector::from(config.eye);
        let forward = (Vector::from(config.look_at) - eye).normalize();
        let side = forward.cross(Vector::from(config.up));
        let right = side.normalize();
        let up = right.cross(forward);
        Ok(Self {
            tan_half_fov: (fov.to_radians() / 2.0).tan(),
            aspect: config.width as f32 / config.height as f32,
            config,
            eye,
            forward,
            right,
            up,
        })
    }

    pub fn config(&self) -> &CameraConfig {
        &self.config
    }

    /// The same camera moved by `translation` (m) and turned about its eye
    /// by `rotation_rad`, a rotation vector (axis × angle) in the world
    /// frame; the look-at point and the up vector turn with it. The returned
    /// camera's config describes the jittered pose. A jitter that would give
    /// an invalid camera (non-finite values) leaves the pose unchanged.
    pub fn with_pose_jitter(&self, translation: [f32; 3], rotation_rad: [f32; 3]) -> Camera {
        let rotation = Rotation::from_scaled_axis(Vector::from(rotation_rad));
        let translation = Vector::from(translation);
        let view = Vector::from(self.config.look_at) - self.eye;
        // Written so that a zero jitter reproduces the config exactly.
        let eye = self.eye + translation;
        let look_at = Vector::from(self.config.look_at) + translation + (rotation * view - view);
        let up = rotation * Vector::from(self.config.up);
        let config = CameraConfig {
            eye: eye.into(),
            look_at: look_at.into(),
            up: up.into(),
            ..self.config.clone()
        };
        Camera::new(config).unwrap_or_else(|_| self.clone())
    }

    /// Renders `world` to a fresh `height × width × 3` RGB image.
    pub fn render(&self, world: &ArmWorld) -> Image {
        let mut image = Image {
            camera: String::new(),
            height: 0,
            width: 0,
            channels: 3,
            data: Vec::new(),
        };
        self.render_into(world, &mut image);
        image
    }

    /// Renders `world` into `image`, reusing its buffer.
    pub fn render_into(&self, world: &ArmWorld, image: &mut Image) {
        let (width, height) = (self.config.width, self.config.height);
        image.camera.clone_from(&self.config.name);
        image.width = width;
        image.height = height;
        image.channels = 3;
        image.data.clear();
        image.data.resize(width as usize * height as usize * 3, 0);

        let props = world.props();
        let mut items: Vec<Item> = world
            .visual_shapes()
            .map(|(pose, visual)| item(pose, &*visual.shape, visual.rgb))
            .chain(props.iter().map(|p| item(p.pose, &*p.shape, p.rgb)))
            .collect();
        // Nearest first, so that far shapes are mostly rejected by their box
        // once a near hit is found.
        let eye = self.eye;
        let distance = |item: &Item| eye.clamp(item.mins, item.maxs).distance_squared(eye);
        items.sort_by(|a, b| distance(a).total_cmp(&distance(b)));
        // Screen-space bounds of each shape: a pixel's ray can only meet the
        // shapes whose projected AABB covers it.
        let bounds: Vec<PixelRect> = items
            .iter()
            .map(|item| self.pixel_rect(item.mins, item.maxs))
            .collect();
        let light = Vector::from(LIGHT).normalize();

        let (w, h) = (width as f32, height as f32);
        let mut in_row: Vec<usize> = Vec::with_capacity(items.len());
        for (row, line) in image.data.chunks_exact_mut(width as usize * 3).enumerate() {
            let row = row as i32;
            in_row.clear();
            in_row.extend((0..items.len()).filter(|&i| bounds[i].rows.contains(&row)));
            let v = (1.0 - 2.0 * (row as f32 + 0.5) / h) * self.tan_half_fov;
            let vertical = self.forward + self.up * v;
            for (col, pixel) in line.chunks_exact_mut(3).enumerate() {
                let col = col as i32;
                let u = (2.0 * (col as f32 + 0.5) / w - 1.0) * self.tan_half_fov * self.aspect;
                let dir = (vertical + self.right * u).normalize();
                let candidates = in_row
                    .iter()
                    .filter(|&&i| bounds[i].cols.contains(&col))
                    .map(|&i| &items[i]);
                let rgb = shade(self.eye, dir, world.table_height, candidates, &items, light);
                for (byte, c) in pixel.iter_mut().zip(rgb) {
                    *byte = (c.clamp(0.0, 1.0) * 255.0 + 0.5) as u8;
                }
            }
        }
    }

    /// The pixels (with a one-pixel margin) whose rays may meet the box;
    /// every pixel when the box reaches behind the eye.
    fn pixel_rect(&self, mins: Vector, maxs: Vector) -> PixelRect {
        let (w, h) = (self.config.width as f32, self.config.height as f32);
        let everything = PixelRect {
            rows: 0..=self.config.height as i32 - 1,
            cols: 0..=self.config.width as i32 - 1,
        };
        let (mut c0, mut c1, mut r0, mut r1) = (f32::MAX, f32::MIN, f32::MAX, f32::MIN);
        for k in 0..8 {
            let corner = Vector::new(
                if k & 1 == 0 { mins.x } else { maxs.x },
                if k & 2 == 0 { mins.y } else { maxs.y },
                if k & 4 == 0 { mins.z } else { maxs.z },
            );
            let rel = corner - self.eye;
            let depth = rel.dot(self.forward);
            if depth <= 1e-4 {
                return everything;
            }
            let x = rel.dot(self.right) / (depth * self.tan_half_fov * self.aspect);
            let y = rel.dot(self.up) / (depth * self.tan_half_fov);
            let col = (x + 1.0) / 2.0 * w - 0.5;
            let row = (1.0 - y) / 2.0 * h - 0.5;
            c0 = c0.min(col);
            c1 = c1.max(col);
            r0 = r0.min(row);
            r1 = r1.max(row);
        }
        if !(c0.is_finite() && c1.is_finite() && r0.is_finite() && r1.is_finite()) {
            return everything;
        }
        // Clamped in f32 first so the casts cannot overflow.
        let lo = |v: f32, n: f32| (v.floor() - 1.0).clamp(-1.0, n) as i32;
        let hi = |v: f32, n: f32| (v.ceil() + 1.0).clamp(-1.0, n) as i32;
        PixelRect {
            rows: lo(r0, h)..=hi(r1, h),
            cols: lo(c0, w)..=hi(c1, w),
        }
    }
}

/// Inclusive pixel ranges.
struct PixelRect {
    rows: std::ops::RangeInclusive<i32>,
    cols: std::ops::RangeInclusive<i32>,
}

fn item(pose: Pose, shape: &dyn Shape, rgb: [f32; 3]) -> Item<'_> {
    let aabb = shape.compute_aabb(&pose);
    Item {
        pose,
        shape,
        rgb,
        mins: aabb.mins,
        maxs: aabb.maxs,
    }
}

/// The colour seen along one ray, which can only meet the table and
/// `candidates`; every one of `items` may shadow.
fn shade<'a>(
    eye: Vector,
    dir: Vector,
    table_height: f32,
    candidates: impl Iterator<Item = &'a Item<'a>>,
    items: &[Item],
    light: Vector,
) -> [f32; 3] {
    let mut best = FAR;
    let mut hit: Option<(Vector, [f32; 3])> = None;

    // The table top: a plane at `table_height`, bounded like its collider.
    if dir.z != 0.0 {
        let t = (table_height - eye.z) / dir.z;
        if t > 0.0 && t < best {
            let p = eye + dir * t;
            if p.x.abs() <= TABLE_HALF_EXTENT && p.y.abs() <= TABLE_HALF_EXTENT {
                let square = (p.x / CHECKER).floor() as i64 + (p.y / CHECKER).floor() as i64;
                let rgb = if square.rem_euclid(2) == 0 {
                    TABLE_LIGHT
                } else {
                    TABLE_DARK
                };
                best = t;
                hit = Some((Vector::Z, rgb));
            }
        }
    }

    let ray = Ray::new(eye, dir);
    let inv_dir = dir.recip();
    for item in candidates {
        if !slab_hit(eye, inv_dir, item.mins, item.maxs, best) {
            continue;
        }
        if let Some(intersection) = item
            .shape
            .cast_ray_and_get_normal(&item.pose, &ray, best, false)
            && intersection.time_of_impact < best
        {
            best = intersection.time_of_impact;
            hit = Some((intersection.normal, item.rgb));
        }
    }

    match hit {
        Some((normal, rgb)) => {
            // Light both sides of a surface: face the normal to the viewer.
            let normal = if normal.dot(dir) > 0.0 {
                -normal
            } else {
                normal
            };
            let lambert = normal.dot(light);
            let lit = lambert > 0.0 && {
                let surface = eye + dir * best + normal * SHADOW_BIAS;
                !in_shadow(surface, light, items)
            };
            let intensity = if lit {
                AMBIENT + DIFFUSE * lambert
            } else {
                AMBIENT
            };
            rgb.map(|c| c * intensity)
        }
        None => {
            let s = dir.z.clamp(0.0, 1.0);
            std::array::from_fn(|k| SKY_HORIZON[k] + (SKY_ZENITH[k] - SKY_HORIZON[k]) * s)
        }
    }
}

/// Whether any shape blocks the light from `point` (the table casts none:
/// it is below everything).
fn in_shadow(point: Vector, light: Vector, items: &[Item]) -> bool {
    let ray = Ray::new(point, light);
    let inv_dir = light.recip();
    items.iter().any(|item| {
        slab_hit(point, inv_dir, item.mins, item.maxs, SHADOW_REACH)
            && item.shape.intersects_ray(&item.pose, &ray, SHADOW_REACH)
    })
}

/// Whether the ray `eye + t · dir`, 0 ≤ t < `max_t`, meets the box.
#[inline]
fn slab_hit(eye: Vector, inv_dir: Vector, mins: Vector, maxs: Vector, max_t: f32) -> bool {
    let t1 = (mins - eye) * inv_dir;
    let t2 = (maxs - eye) * inv_dir;
    let near = t1.min(t2).max_element().max(0.0);
    let far = t1.max(t2).min_element().min(max_t);
    near <= far
}

/// Writes `image` as an 8-bit PNG (grey, grey-alpha, RGB or RGBA by channel
/// count). A malformed image or a failed write is an error, never a panic.
pub fn save_png(image: &Image, path: &Path) -> std::io::Result<()> {
    let invalid = |message: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, message);
    let color = match image.channels {
        1 => png::ColorType::Grayscale,
        2 => png::ColorType::GrayscaleAlpha,
        3 => png::ColorType::Rgb,
        4 => png::ColorType::Rgba,
        n => return Err(invalid(format!("cannot write a {n}-channel image as PNG"))),
    };
    let expected = image.width as u64 * image.height as u64 * image.channels as u64;
    if image.width == 0 || image.height == 0 || image.data.len() as u64 != expected {
        return Err(invalid(format!(
            "image `{}` is {}x{}x{} but holds {} bytes",
            image.camera,
            image.height,
            image.width,
            image.channels,
            image.data.len()
        )));
    }
    // Encode in memory so that every write error, flushing included, is
    // reported by `fs::write`.
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, image.width, image.height);
    encoder.set_color(color);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(&image.data)?;
    writer.finish()?;
    std::fs::write(path, bytes)
}
