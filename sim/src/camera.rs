//! The software camera: a CPU z-buffer rasteriser that renders an
//! `ArmWorld` to an RGB image.
//!
//! A frame is posed once as a `Scene`, shared by every camera of the frame:
//! the world-space triangles of the arm's visual meshes (simplified at load
//! by vertex clustering on a `VISUAL_MESH_CELL` grid, `simplify_mesh`) and
//! of the props (the task's cubes and markers; primitives are tessellated),
//! and an orthographic shadow map of the one directional light (the depth
//! towards the light of the nearest caster per `SHADOW_TEXEL` texel). Each
//! camera then projects the vertices once, rasterises every front-facing
//! triangle with exact fixed-point edge functions (top-left rule: no cracks,
//! no double hits) into an inverse-depth buffer, and shades each pixel: the
//! table top is an analytic plane with a checker pattern, intersected per
//! pixel and kept where it is nearer; surfaces are Lambert with the light
//! plus ambient, flat per triangle and lit on the side facing the viewer,
//! with hard shadows from the shadow map; pixels that meet nothing see a
//! sky gradient. What depends on the camera alone (each pixel's table point
//! and checker colour, or its sky colour) is filled once per camera and
//! shared by its clones; the depth buffers are kept per thread. There is
//! no randomness and no threading, and the same
//! operations run in the same order, so the same world renders to
//! bit-identical bytes.
//!
//! Rendering takes `&ArmWorld` (or `&Scene`) and `&Camera` only, so several
//! worlds may be rendered on several threads at once.

use crate::world::ArmWorld;
use cerebellum_core::Image;
use cerebellum_core::bounds::{Limits, check_name, refusal};
use rapier3d::math::{Pose, Rotation, Vector};
use rapier3d::parry::shape::Shape;
use std::path::Path;
use std::sync::{Arc, OnceLock};

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
const AMBIENT: f32 = 0.35;
const DIFFUSE: f32 = 0.65;
/// Geometry nearer to the eye than this (m, along the view) is clipped.
const NEAR: f32 = 1e-3;
/// Edge of one shadow-map texel (m) while the scene's shadow casters fit
/// in `SHADOW_MAX_TEXELS` texels across; larger scenes get larger texels.
const SHADOW_TEXEL: f32 = 0.008;
const SHADOW_MAX_TEXELS: usize = 512;
/// A lit point is looked up in the shadow map this many texels off its
/// surface (along the normal), and counts as shadowed only behind an
/// occluder more than `SHADOW_DEPTH_BIAS` texels nearer the light: against
/// shadow acne, the self-shadowing of a surface by its own texels.
const SHADOW_NORMAL_OFFSET: f32 = 1.5;
const SHADOW_DEPTH_BIAS: f32 = 1.0;
/// Render meshes: the arm's visual meshes are simplified at load by
/// clustering their vertices on a grid of this edge (m; `simplify_mesh`).
pub const VISUAL_MESH_CELL: f32 = 0.010;
/// Tessellation of curved primitives (balls, cylinders, capsules, cones).
const CURVE_SEGMENTS: u32 = 16;

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
    /// Filled at the first render and shared by clones.
    background: Arc<OnceLock<Background>>,
}

/// A world posed for rendering, shared by every camera of one frame: the
/// world-space triangles of the arm's visual meshes and of the props, with
/// their face normals and colours, and the shadow map of the light.
pub struct Scene {
    /// World position of every vertex.
    points: Vec<Vector>,
    /// Vertex indices of every triangle.
    triangles: Vec<[u32; 3]>,
    /// Index into `colours` of every triangle.
    shape_of: Vec<u32>,
    /// Linear RGB of every shape.
    colours: Vec<[f32; 3]>,
    table_height: f32,
    light: Vector,
    shadow: ShadowMap,
}

/// Depth towards the light of the nearest caster over a grid in the plane
/// across the light: an orthographic depth map of the directional light.
struct ShadowMap {
    /// In-plane axes (unit, orthogonal to the light and each other).
    axis_s: Vector,
    axis_t: Vector,
    /// World coordinates along the axes of texel (0, 0)'s corner.
    origin: [f32; 2],
    /// Edge of one texel (m), and its inverse.
    texel: f32,
    inv_texel: f32,
    width: usize,
    height: usize,
    /// `point · light` of the caster nearest the light; −∞ where none.
    depth: Vec<f32>,
}

impl Scene {
    /// Poses every visual shape of the arm and every prop of `world`.
    pub fn new(world: &ArmWorld) -> Scene {
        let mut scene = Scene {
            points: Vec::new(),
            triangles: Vec::new(),
            shape_of: Vec::new(),
            colours: Vec::new(),
            table_height: world.table_height,
            light: Vector::from(LIGHT).normalize(),
            shadow: ShadowMap::empty(),
        };
        for (pose, visual) in world.visual_shapes() {
            scene.add_shape(&pose, &*visual.shape, visual.rgb);
        }
        for prop in world.props() {
            scene.add_shape(&prop.pose, &*prop.shape, prop.rgb);
        }
        scene.shadow = ShadowMap::new(&scene.points, &scene.triangles, scene.light);
        scene
    }

    /// The unit face normal of triangle `index` (zero when degenerate).
    #[inline]
    fn normal(&self, index: usize) -> Vector {
        let [a, b, c] = self.triangles[index].map(|i| self.points[i as usize]);
        (b - a).cross(c - a).normalize_or_zero()
    }

    /// Triangles in the scene (for tests and benches).
    pub fn triangle_count(&self) -> usize {
        self.triangles.len()
    }

    fn add_shape(&mut self, pose: &Pose, shape: &dyn Shape, rgb: [f32; 3]) {
        let colour = self.colours.len() as u32;
        self.colours.push(rgb);
        let mut push = |vertices: &[Vector], indices: &[[u32; 3]]| {
            let base = self.points.len() as u32;
            self.points.extend(vertices.iter().map(|&v| pose * v));
            self.triangles
                .extend(indices.iter().map(|t| t.map(|i| base + i)));
            self.shape_of
                .extend(std::iter::repeat_n(colour, indices.len()));
        };
        if let Some(mesh) = shape.as_trimesh() {
            push(mesh.vertices(), mesh.indices());
        } else if let Some(compound) = shape.as_compound() {
            for (local, part) in compound.shapes() {
                self.add_shape(&(pose * local), &**part, rgb);
            }
        } else {
            let (vertices, indices) = triangulate(shape);
            push(&vertices, &indices);
        }
    }
}

/// Triangles of a primitive shape (curved ones tessellated with
/// `CURVE_SEGMENTS` segments); any other shape is drawn as its bounding box.
pub fn triangulate(shape: &dyn Shape) -> (Vec<Vector>, Vec<[u32; 3]>) {
    use rapier3d::parry::shape::{Cone, ConvexPolyhedron, Cylinder};
    let n = CURVE_SEGMENTS;
    if let Some(s) = shape.as_cuboid() {
        s.to_trimesh()
    } else if let Some(s) = shape.as_ball() {
        s.to_trimesh(n, n / 2)
    } else if let Some(s) = shape.as_capsule() {
        s.to_trimesh(n, n / 2)
    } else if let Some(s) = shape.as_shape::<Cylinder>() {
        s.to_trimesh(n)
    } else if let Some(s) = shape.as_shape::<Cone>() {
        s.to_trimesh(n)
    } else if let Some(s) = shape.as_shape::<ConvexPolyhedron>() {
        s.to_trimesh()
    } else if let Some(s) = shape.as_trimesh() {
        (s.vertices().to_vec(), s.indices().to_vec())
    } else {
        let aabb = shape.compute_local_aabb();
        let (vertices, indices) =
            rapier3d::parry::shape::Cuboid::new(aabb.half_extents()).to_trimesh();
        let centre = aabb.center();
        (vertices.into_iter().map(|v| v + centre).collect(), indices)
    }
}

/// A mesh simplified for the camera by vertex clustering: every vertex
/// moves to the mean of the vertices in its `cell`-sided grid cell, and
/// triangles left with fewer than three distinct vertices, or repeating
/// another's vertices, are dropped. Deterministic (first-seen order). A
/// mesh that would keep fewer than 4 triangles (smaller than a cell or
/// two) is returned whole.
pub fn simplify_mesh(
    vertices: &[Vector],
    triangles: &[[u32; 3]],
    cell: f32,
) -> (Vec<Vector>, Vec<[u32; 3]>) {
    use std::collections::{HashMap, HashSet};
    let mut cells: HashMap<[i32; 3], u32> = HashMap::new();
    let mut sums: Vec<[f64; 3]> = Vec::new();
    let mut counts: Vec<u32> = Vec::new();
    let remap: Vec<u32> = vertices
        .iter()
        .map(|v| {
            let key = [v.x, v.y, v.z].map(|c| (c / cell).floor() as i32);
            let index = *cells.entry(key).or_insert_with(|| {
                sums.push([0.0; 3]);
                counts.push(0);
                sums.len() as u32 - 1
            });
            let sum = &mut sums[index as usize];
            for (s, c) in sum.iter_mut().zip([v.x, v.y, v.z]) {
                *s += f64::from(c);
            }
            counts[index as usize] += 1;
            index
        })
        .collect();
    let mut seen: HashSet<[u32; 3]> = HashSet::new();
    let mut kept = Vec::new();
    for t in triangles {
        let [a, b, c] = t.map(|i| remap[i as usize]);
        if a == b || b == c || a == c {
            continue;
        }
        // The same corners in the same turning order; the two sides of a
        // wall thinner than a cell keep both their triangles.
        let mut key = [a, b, c];
        let first = (0..3).min_by_key(|&k| key[k]).unwrap_or(0);
        key.rotate_left(first);
        if seen.insert(key) {
            kept.push([a, b, c]);
        }
    }
    if kept.len() < 4 {
        return (vertices.to_vec(), triangles.to_vec());
    }
    let points = sums
        .iter()
        .zip(&counts)
        .map(|(s, &n)| {
            let n = f64::from(n);
            Vector::new((s[0] / n) as f32, (s[1] / n) as f32, (s[2] / n) as f32)
        })
        .collect();
    (points, kept)
}

impl ShadowMap {
    fn empty() -> Self {
        ShadowMap {
            axis_s: Vector::X,
            axis_t: Vector::Y,
            origin: [0.0; 2],
            texel: 1.0,
            inv_texel: 1.0,
            width: 0,
            height: 0,
            depth: Vec::new(),
        }
    }

    /// Rasterises every triangle seen from the light.
    fn new(points: &[Vector], triangles: &[[u32; 3]], light: Vector) -> Self {
        let axis_s = light.cross(Vector::Y).normalize();
        let axis_t = light.cross(axis_s);
        let projected: Vec<[f32; 3]> = points
            .iter()
            .map(|p| [p.dot(axis_s), p.dot(axis_t), p.dot(light)])
            .collect();
        if projected.is_empty() {
            return Self::empty();
        }
        let (mut lo, mut hi) = ([f32::MAX; 2], [f32::MIN; 2]);
        for p in &projected {
            for k in 0..2 {
                lo[k] = lo[k].min(p[k]);
                hi[k] = hi[k].max(p[k]);
            }
        }
        let extent = (hi[0] - lo[0]).max(hi[1] - lo[1]);
        if !extent.is_finite() {
            return Self::empty();
        }
        let texel = SHADOW_TEXEL.max(extent / (SHADOW_MAX_TEXELS - 2) as f32);
        // One texel of margin on every side.
        let origin = [lo[0] - texel, lo[1] - texel];
        let size = |k: usize| (((hi[k] - lo[k]) / texel) as usize + 3).min(SHADOW_MAX_TEXELS);
        let (width, height) = (size(0), size(1));
        let mut depth = vec![f32::NEG_INFINITY; width * height];
        let corners: Vec<Corner> = projected
            .iter()
            .map(|p| Corner::new((p[0] - origin[0]) / texel, (p[1] - origin[1]) / texel, p[2]))
            .collect();
        for &[a, b, c] in triangles {
            let [a, b, c] = [a, b, c].map(|i| corners[i as usize]);
            rasterize(a, b, c, width, height, LIGHT_BACK_FACE, |x, y, d| {
                let slot = &mut depth[y * width + x];
                if d > *slot {
                    *slot = d;
                }
            });
        }
        ShadowMap {
            axis_s,
            axis_t,
            origin,
            texel,
            inv_texel: 1.0 / texel,
            width,
            height,
            depth,
        }
    }

    /// Whether a caster nearer the light covers `point` (offset off its
    /// surface along `normal`).
    fn shadowed(&self, point: Vector, normal: Vector, light: Vector) -> bool {
        let q = point + normal * (SHADOW_NORMAL_OFFSET * self.texel);
        let x = (q.dot(self.axis_s) - self.origin[0]) * self.inv_texel;
        let y = (q.dot(self.axis_t) - self.origin[1]) * self.inv_texel;
        if !(x >= 0.0 && y >= 0.0 && x < self.width as f32 && y < self.height as f32) {
            return false;
        }
        let caster = self.depth[y as usize * self.width + x as usize];
        caster > q.dot(light) + SHADOW_DEPTH_BIAS * self.texel
    }
}

/// Sub-pixel bits of the rasteriser's fixed-point corners.
const SUBPIXEL_BITS: u32 = 8;
const SUBPIXEL: f32 = (1 << SUBPIXEL_BITS) as f32;
/// Corners are clamped to ±this many pixels, so that the fixed-point edge
/// functions fit an i64.
const MAX_PIXEL_COORDINATE: f32 = (1 << 22) as f32;

/// A corner in the rasteriser's fixed point: pixel coordinates times
/// 2^SUBPIXEL_BITS, and the value interpolated across the triangle
/// (inverse depth, or depth towards the light).
#[derive(Clone, Copy)]
struct Corner {
    x: i32,
    y: i32,
    value: f32,
}

/// Marks a corner that cannot be projected (behind the near plane, or not
/// finite).
const UNPROJECTED: i32 = i32::MIN;

impl Corner {
    /// Pixel coordinates `x`, `y` (clamped to ±MAX_PIXEL_COORDINATE) in
    /// fixed point; not finite → `UNPROJECTED`.
    #[inline]
    fn new(x: f32, y: f32, value: f32) -> Corner {
        if !(x.is_finite() && y.is_finite() && value.is_finite()) {
            return Corner {
                x: UNPROJECTED,
                y: UNPROJECTED,
                value: 0.0,
            };
        }
        // Truncation: any rounding works, as long as a corner shared by
        // two triangles snaps the same way in both.
        let fixed =
            |v: f32| (v.clamp(-MAX_PIXEL_COORDINATE, MAX_PIXEL_COORDINATE) * SUBPIXEL) as i32;
        Corner {
            x: fixed(x),
            y: fixed(y),
            value,
        }
    }
}

/// Calls `sample(x, y, value)` for every pixel `(x, y)` of a
/// `width × height` grid whose centre `(x + ½, y + ½)` lies in the triangle
/// `a b c`, with the corners' values interpolated (barycentric) at the
/// centre. The edge functions are exact integers on the fixed-point
/// corners, so a centre on an edge shared by two triangles belongs to
/// exactly one of them (top-left rule): meshes have no cracks and no double
/// hits. Either winding; degenerate triangles cover nothing.
#[inline]
fn rasterize(
    a: Corner,
    b: Corner,
    c: Corner,
    width: usize,
    height: usize,
    cull: i64,
    mut sample: impl FnMut(usize, usize, f32),
) {
    // Pixel centres inside the bounding box: x·one + half in [min, max].
    let one = 1i32 << SUBPIXEL_BITS;
    let half = one / 2;
    let first = |lo: i32| (lo - half + one - 1).div_euclid(one).max(0);
    let last = |hi: i32, n: usize| (hi - half).div_euclid(one).min(n as i32 - 1);
    let x0 = first(a.x.min(b.x).min(c.x));
    let x1 = last(a.x.max(b.x).max(c.x), width);
    if x0 > x1 {
        return;
    }
    let y0 = first(a.y.min(b.y).min(c.y));
    let y1 = last(a.y.max(b.y).max(c.y), height);
    if y0 > y1 {
        return;
    }
    let p = [a, b, c].map(|c| [i64::from(c.x), i64::from(c.y)]);
    let area =
        (p[1][0] - p[0][0]) * (p[2][1] - p[0][1]) - (p[1][1] - p[0][1]) * (p[2][0] - p[0][0]);
    if area == 0 || area.signum() == cull {
        return;
    }
    // Counter-clockwise in the y-down grid after this swap.
    let (p, values) = if area > 0 {
        (p, [a.value, b.value, c.value])
    } else {
        ([p[0], p[2], p[1]], [a.value, c.value, b.value])
    };
    let inv_area = 1.0 / area.abs() as f32;
    // Edge k is opposite corner k: E_k(s) = dx (s.y − p.y) − dy (s.x − p.x),
    // positive inside. A centre exactly on an edge counts for a top edge
    // (along +x) or a left edge (along −y) only: `bias` is 0 for those and
    // −1 for the others, and a centre is inside where every E_k + bias ≥ 0.
    let one = i64::from(one);
    let start = [i64::from(x0) * one + one / 2, i64::from(y0) * one + one / 2];
    let mut row = [0i64; 3];
    let mut step_x = [0i64; 3];
    let mut step_y = [0i64; 3];
    for k in 0..3 {
        let (from, to) = (p[(k + 1) % 3], p[(k + 2) % 3]);
        let (dx, dy) = (to[0] - from[0], to[1] - from[1]);
        let owned = (dy == 0 && dx > 0) || dy < 0;
        let bias = if owned { 0 } else { -1 };
        row[k] = dx * (start[1] - from[1]) - dy * (start[0] - from[0]) + bias;
        step_x[k] = -dy * one;
        step_y[k] = dx * one;
    }
    for y in y0 as usize..=y1 as usize {
        let mut e = row;
        for x in x0 as usize..=x1 as usize {
            if (e[0] | e[1] | e[2]) >= 0 {
                let value =
                    (e[0] as f32 * values[0] + e[1] as f32 * values[1] + e[2] as f32 * values[2])
                        * inv_area;
                sample(x, y, value);
            }
            for k in 0..3 {
                e[k] += step_x[k];
            }
        }
        for k in 0..3 {
            row[k] += step_y[k];
        }
    }
}

/// ⌊v⌋ for |v| < 2³¹ without a libm call (the baseline x86-64 target has
/// no rounding instruction).
#[inline]
fn floor_i(v: f32) -> i32 {
    let t = v as i32;
    t - i32::from(t as f32 > v)
}

/// The sign of the fixed-point area of a triangle seen from its back (the
/// meshes wind counter-clockwise seen from outside; the rasteriser's grid
/// is y-down): the camera skips those, as a closed surface's nearest face
/// towards the eye is always a front face.
const BACK_FACE: i64 = 1;
/// The same for the shadow map, whose (s, t) axes make the area's sign
/// that of `normal · light`: it keeps the faces turned to the light, which
/// hold a closed caster's depth nearest the light. (Clustering keeps both
/// sides of walls thinner than a cell, so they still cast.)
const LIGHT_BACK_FACE: i64 = -1;

/// Buffers of the depth pass, kept per thread from frame to frame.
#[derive(Default)]
struct Buffers {
    /// Inverse view depth of the nearest triangle per pixel (0: none).
    inv_depth: Vec<f32>,
    /// Index of that triangle, or `SKY`.
    hit: Vec<u32>,
    /// Every scene vertex projected.
    corners: Vec<Corner>,
}

/// What a camera sees where no triangle is nearer, per pixel: the table top
/// (a plane at the table's height, bounded like its collider) at view depth
/// `depth` along the pixel's direction, the point met and its checker
/// colour; or, where the ray misses the table (`depth` = ∞), the sky's
/// colour. It depends on the camera and the table's height only, so a
/// camera fills it once (for the table height of its first world).
#[derive(Default)]
struct Background {
    table_height: f32,
    depth: Vec<f32>,
    point: Vec<Vector>,
    rgb: Vec<[f32; 3]>,
}

impl std::fmt::Debug for Background {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.debug_struct("Background")
            .field("table_height", &self.table_height)
            .finish_non_exhaustive()
    }
}

thread_local! {
    static BUFFERS: std::cell::RefCell<Buffers> = std::cell::RefCell::default();
}

/// What a pixel sees after the depth pass.
const SKY: u32 = u32::MAX;

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
            background: Arc::default(),
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
        if translation == [0.0; 3] && rotation_rad == [0.0; 3] {
            return self.clone();
        }
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
        self.render_scene(&Scene::new(world))
    }

    /// Renders a posed scene to a fresh image; several cameras of one
    /// frame share the scene (and its shadow map).
    pub fn render_scene(&self, scene: &Scene) -> Image {
        let mut image = Image {
            camera: String::new(),
            height: 0,
            width: 0,
            channels: 3,
            data: Vec::new(),
        };
        self.render_scene_into(scene, &mut image);
        image
    }

    /// Renders `world` into `image`, reusing its buffer.
    pub fn render_into(&self, world: &ArmWorld, image: &mut Image) {
        self.render_scene_into(&Scene::new(world), image);
    }

    /// The view directions through the pixel centres, not normalised, as
    /// per-column `right` and per-row `forward + up` parts: their component
    /// along `forward` is 1, so a point at `eye + t · dir` lies at view
    /// depth `t`.
    fn pixel_dirs(&self) -> (Vec<Vector>, Vec<Vector>) {
        let (w, h) = (self.config.width as f32, self.config.height as f32);
        let columns = (0..self.config.width)
            .map(|col| {
                let u = (2.0 * (col as f32 + 0.5) / w - 1.0) * self.tan_half_fov * self.aspect;
                self.right * u
            })
            .collect();
        let rows = (0..self.config.height)
            .map(|row| {
                let v = (1.0 - 2.0 * (row as f32 + 0.5) / h) * self.tan_half_fov;
                self.forward + self.up * v
            })
            .collect();
        (columns, rows)
    }

    fn make_background(
        &self,
        table_height: f32,
        columns: &[Vector],
        rows: &[Vector],
    ) -> Background {
        let lift = table_height - self.eye.z;
        let mut background = Background {
            table_height,
            ..Background::default()
        };
        for &vertical in rows {
            for &horizontal in columns {
                let dir = vertical + horizontal;
                let t = lift / dir.z;
                let point = self.eye + dir * t;
                let table = t > 0.0
                    && point.x.abs() <= TABLE_HALF_EXTENT
                    && point.y.abs() <= TABLE_HALF_EXTENT;
                if table {
                    // Within ±TABLE_HALF_EXTENT, in floor_i's range.
                    let square =
                        floor_i(point.x * (1.0 / CHECKER)) + floor_i(point.y * (1.0 / CHECKER));
                    background.depth.push(t);
                    background.point.push(point);
                    background.rgb.push(if square & 1 == 0 {
                        TABLE_LIGHT
                    } else {
                        TABLE_DARK
                    });
                } else {
                    let s = (dir.z / dir.length()).clamp(0.0, 1.0);
                    background.depth.push(f32::INFINITY);
                    background.point.push(Vector::ZERO);
                    background.rgb.push(std::array::from_fn(|k| {
                        SKY_HORIZON[k] + (SKY_ZENITH[k] - SKY_HORIZON[k]) * s
                    }));
                }
            }
        }
        background
    }

    /// A view-space point (right, up, depth), in front of the eye, as a
    /// rasteriser corner: pixel coordinates (column, row) and the inverse
    /// depth.
    #[inline]
    fn corner(&self, x: f32, y: f32, z: f32) -> Corner {
        let (w, h) = (self.config.width as f32, self.config.height as f32);
        let iz = 1.0 / z;
        Corner::new(
            (x * iz / (self.tan_half_fov * self.aspect) + 1.0) * 0.5 * w,
            (1.0 - y * iz / self.tan_half_fov) * 0.5 * h,
            iz,
        )
    }

    /// Renders a posed scene into `image`, reusing its buffer: a depth pass
    /// (the table plane per pixel, then every triangle, nearest wins by
    /// inverse view depth), then one shading pass over the pixels.
    pub fn render_scene_into(&self, scene: &Scene, image: &mut Image) {
        let (width, height) = (self.config.width as usize, self.config.height as usize);
        image.camera.clone_from(&self.config.name);
        image.width = width as u32;
        image.height = height as u32;
        image.channels = 3;
        image.data.clear();
        image.data.resize(width * height * 3, 0);
        BUFFERS.with_borrow_mut(|buffers| self.draw(scene, image, buffers));
    }

    fn draw(&self, scene: &Scene, image: &mut Image, buffers: &mut Buffers) {
        let (width, height) = (self.config.width as usize, self.config.height as usize);
        let (columns, rows) = self.pixel_dirs();
        let Buffers {
            inv_depth,
            hit,
            corners,
        } = buffers;
        inv_depth.clear();
        inv_depth.resize(width * height, 0.0);
        hit.clear();
        hit.resize(width * height, SKY);
        let (inv_depth, hit) = (&mut inv_depth[..], &mut hit[..]);
        // Depth pass: every triangle, nearest wins by inverse view depth.
        let view = |p: Vector| {
            let rel = p - self.eye;
            [rel.dot(self.right), rel.dot(self.up), rel.dot(self.forward)]
        };
        corners.clear();
        corners.extend(scene.points.iter().map(|&p| {
            let [x, y, z] = view(p);
            if z > NEAR {
                self.corner(x, y, z)
            } else {
                Corner::new(f32::NAN, 0.0, 0.0)
            }
        }));
        let mut clipped = Vec::new();
        for (index, tri) in scene.triangles.iter().enumerate() {
            let [a, b, c] = tri.map(|i| corners[i as usize]);
            let mut draw = |a: Corner, b: Corner, c: Corner| {
                rasterize(a, b, c, width, height, BACK_FACE, |x, y, iz| {
                    let slot = y * width + x;
                    if iz > inv_depth[slot] {
                        inv_depth[slot] = iz;
                        hit[slot] = index as u32;
                    }
                })
            };
            if a.x == UNPROJECTED || b.x == UNPROJECTED || c.x == UNPROJECTED {
                // A corner at or behind the near plane: clip there.
                clip_near(tri.map(|i| view(scene.points[i as usize])), &mut clipped);
                let corners: Vec<Corner> = clipped
                    .iter()
                    .map(|&[x, y, z]| self.corner(x, y, z))
                    .collect();
                for k in 1..corners.len().saturating_sub(1) {
                    draw(corners[0], corners[k], corners[k + 1]);
                }
            } else {
                draw(a, b, c);
            }
        }

        // Shading pass: the table (kept where it is at least as near as the
        // nearest triangle), the sky, or the triangle.
        let light = scene.light;
        let cached = self
            .background
            .get_or_init(|| self.make_background(scene.table_height, &columns, &rows));
        let other_table;
        let background = if cached.table_height.to_bits() == scene.table_height.to_bits() {
            cached
        } else {
            other_table = self.make_background(scene.table_height, &columns, &rows);
            &other_table
        };
        let mut rows_out = image.data.chunks_exact_mut(width * 3);
        for (row, &vertical) in rows.iter().enumerate() {
            let line = rows_out.next().expect("one line per row");
            for (col, &horizontal) in columns.iter().enumerate() {
                let slot = row * width + col;
                let dir = vertical + horizontal;
                // t ≤ 1 / inverse depth, without a division; false where the
                // ray misses the table (t = ∞).
                let rgb = if background.depth[slot] * inv_depth[slot] <= 1.0 {
                    let point = background.point[slot];
                    shade(background.rgb[slot], point, Vector::Z, light, &scene.shadow)
                } else if hit[slot] == SKY {
                    background.rgb[slot]
                } else {
                    let index = hit[slot] as usize;
                    let point = self.eye + dir * (1.0 / inv_depth[slot]);
                    let normal = scene.normal(index);
                    // Light both sides of a surface: face the viewer.
                    let normal = if normal.dot(dir) > 0.0 {
                        -normal
                    } else {
                        normal
                    };
                    let rgb = scene.colours[scene.shape_of[index] as usize];
                    shade(rgb, point, normal, light, &scene.shadow)
                };
                // In [0.5, 255.5] after the clamp, so the plain i32
                // conversion gives the same byte as a saturating `as u8`.
                let byte = |c: f32| (c.clamp(0.0, 1.0) * 255.0 + 0.5) as i32 as u8;
                line[col * 3] = byte(rgb[0]);
                line[col * 3 + 1] = byte(rgb[1]);
                line[col * 3 + 2] = byte(rgb[2]);
            }
        }
    }
}

/// Lambert with the light plus ambient, the light blocked where the
/// shadow map has a caster between `point` and the light.
#[inline]
fn shade(
    rgb: [f32; 3],
    point: Vector,
    normal: Vector,
    light: Vector,
    shadow: &ShadowMap,
) -> [f32; 3] {
    let lambert = normal.dot(light);
    let lit = lambert > 0.0 && !shadow.shadowed(point, normal, light);
    let intensity = if lit {
        AMBIENT + DIFFUSE * lambert
    } else {
        AMBIENT
    };
    rgb.map(|c| c * intensity)
}

/// The part of a view-space triangle in front of the near plane, as a
/// convex polygon (0, 3 or 4 corners) in `out`.
fn clip_near(corners: [[f32; 3]; 3], out: &mut Vec<[f32; 3]>) {
    out.clear();
    for k in 0..3 {
        let (p, q) = (corners[k], corners[(k + 1) % 3]);
        let (p_in, q_in) = (p[2] > NEAR, q[2] > NEAR);
        if p_in {
            out.push(p);
        }
        if p_in != q_in {
            let s = (NEAR - p[2]) / (q[2] - p[2]);
            out.push(std::array::from_fn(|i| p[i] + (q[i] - p[i]) * s));
        }
    }
    // The clipped corners sit exactly on the near plane; nudge them just in
    // front so the projection stays finite.
    for corner in out.iter_mut() {
        corner[2] = corner[2].max(NEAR * (1.0 + f32::EPSILON * 4.0));
    }
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
