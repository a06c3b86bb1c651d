//! An arm loaded from a URDF: its physics template (rapier3d-urdf), its
//! kinematic chain, its actuated joints with their actuators, and the
//! triangle meshes the software camera renders.
//!
//! Loading is where bad input arrives, so every failure names the file and
//! the element: a missing file, malformed XML, a mesh that does not exist or
//! does not load (rapier3d-urdf would silently skip it), an ambiguous end
//! effector.
//!
//! Every file is read through `urdf_files::read`, so the SO-101 embedded in
//! the binary (`<embedded>/so101/…`) loads from memory exactly as an arm on
//! disk loads from its folder; the mesh colliders are built here rather than
//! by rapier3d-urdf (which only reads meshes from disk), the same way it
//! builds them.

use crate::hull;
use crate::kinematics::{Chain, ChainJoint, ChainJointKind, JointDrive, urdf_origin};
use crate::robot_config::{ActuatorParams, RobotConfig};
use crate::urdf_files;
use rapier3d::geometry::{MeshConverter, SharedShape};
use rapier3d::math::{Pose, Vector};
use rapier3d::prelude::{
    ColliderBuilder, Group, InteractionGroups, InteractionTestMode, RigidBodyBuilder,
};
use rapier3d_meshloader::mesh_loader;
use rapier3d_urdf::urdf_rs::{self, Geometry, JointType};
use rapier3d_urdf::{UrdfCollider, UrdfLoaderOptions, UrdfRobot};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read URDF {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("malformed URDF {path}: {message}")]
    Malformed { path: PathBuf, message: String },
    #[error("URDF {urdf}: link `{link}` {element} names mesh `{mesh}`, which {problem}")]
    Mesh {
        urdf: PathBuf,
        link: String,
        element: String,
        mesh: String,
        problem: String,
    },
    #[error(
        "URDF {urdf}: the end effector is ambiguous; pass --ee-link with one of the leaf links: {}",
        candidates.join(", ")
    )]
    AmbiguousEndEffector {
        urdf: PathBuf,
        candidates: Vec<String>,
    },
    #[error("URDF {urdf}: no link named `{name}`; links are: {}", links.join(", "))]
    UnknownLink {
        urdf: PathBuf,
        name: String,
        links: Vec<String>,
    },
    #[error("URDF {urdf}: {message}")]
    Structure { urdf: PathBuf, message: String },
    /// A number the URDF gives is out of its accepted range (NaN and
    /// infinities included): the message names the joint or link, the
    /// element and attribute, the value and the range.
    #[error("URDF {urdf}: {message}")]
    Invalid { urdf: PathBuf, message: String },
    #[error("{0}")]
    Config(String),
}

/// How a commanded joint moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JointMotion {
    Revolute,
    Prismatic,
}

/// A joint the policy commands.
#[derive(Clone, Debug, PartialEq)]
pub struct ActuatedJoint {
    pub name: String,
    pub motion: JointMotion,
    /// rad or m; continuous joints get ±2π.
    pub lower: f32,
    pub upper: f32,
    /// URDF effort limit (N·m or N).
    pub effort: f32,
    pub actuator: ActuatorParams,
}

/// A joint that follows a leader: `q = multiplier · q_leader + offset`.
#[derive(Clone, Debug, PartialEq)]
pub struct MimicJoint {
    pub name: String,
    pub motion: JointMotion,
    pub leader: usize,
    pub multiplier: f32,
    pub offset: f32,
}

/// One triangle mesh (or primitive) the camera draws, in its link's frame.
#[derive(Clone)]
pub struct VisualShape {
    pub shape: SharedShape,
    pub local_pose: Pose,
    pub rgb: [f32; 3],
}

/// Options for loading an arm.
#[derive(Clone, Debug, Default)]
pub struct ArmOptions {
    /// The end-effector link; overrides the robot config.
    pub ee_link: Option<String>,
    /// A robot config to use instead of the one beside the URDF.
    pub config: Option<PathBuf>,
}

/// An arm, loaded once and shared by every world built from it.
pub struct ArmModel {
    pub name: String,
    /// The URDF it was loaded from; under `<embedded>` for the arm compiled
    /// into the binary (see `urdf_files`).
    pub urdf_path: PathBuf,
    pub config: RobotConfig,
    pub joints: Vec<ActuatedJoint>,
    pub mimics: Vec<MimicJoint>,
    pub ee_link: String,
    /// Root → end effector, driven by `joints` coordinates.
    pub chain: Chain,
    /// Home pose, one value per actuated joint.
    pub home: Vec<f32>,
    /// rapier3d-urdf's bodies, colliders and joints, cloned into each world.
    pub(crate) template: UrdfRobot,
    /// URDF joint name → index in `template.joints`.
    pub(crate) template_joint: HashMap<String, usize>,
    /// Visual shapes per `template.links` index.
    pub(crate) visuals: Vec<Vec<VisualShape>>,
    /// Names of the rigid bodies the URDF became (links merged into their
    /// parent as frames are not among them), by body index.
    pub link_names: Vec<String>,
    /// Per body: it only ever turns about the vertical relative to the fixed
    /// root (every joint above it is fixed or revolute about z), so the
    /// heights of its points never change.
    pub(crate) turns_about_vertical: Vec<bool>,
}

impl std::fmt::Debug for ArmModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArmModel")
            .field("name", &self.name)
            .field("urdf_path", &self.urdf_path)
            .field("joints", &self.joints)
            .field("ee_link", &self.ee_link)
            .finish_non_exhaustive()
    }
}

/// Below this mass (kg), a link with no geometry is a named frame, not a body.
const FRAME_LINK_MASS: f64 = 1e-6;

impl ArmModel {
    /// Loads the arm described by the URDF at `urdf`: a file on disk, or an
    /// arm embedded in the binary (`crate::so101_urdf()`), read from memory.
    pub fn load(urdf: &Path, options: &ArmOptions) -> Result<Arc<Self>, ModelError> {
        let urdf_path = urdf.to_path_buf();
        let text = urdf_files::read_to_string(urdf).map_err(|e| ModelError::Read {
            path: urdf_path.clone(),
            message: e.to_string(),
        })?;
        let mut robot = urdf_rs::read_from_string(&text).map_err(|e| ModelError::Malformed {
            path: urdf_path.clone(),
            message: e.to_string(),
        })?;
        check_numbers(&robot, &urdf_path)?;
        let config = match options.config.clone().or_else(|| RobotConfig::beside(urdf)) {
            Some(path) => RobotConfig::from_file(&path).map_err(ModelError::Config)?,
            None => RobotConfig::default(),
        };
        let urdf_dir = if urdf_files::is_embedded(urdf) {
            urdf.parent().map(Path::to_path_buf)
        } else {
            urdf.canonicalize()
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf))
        }
        .unwrap_or_else(|| PathBuf::from("."));
        resolve_meshes(&mut robot, &urdf_path, &urdf_dir)?;
        demote_frame_links(&mut robot);

        let tree = Tree::new(&robot, &urdf_path)?;
        let (joints, mimics, drive_of) = actuated_joints(&robot, &tree, &config, &urdf_path)?;
        let ee_link = choose_end_effector(&robot, &tree, options, &config, &urdf_path)?;
        let chain = tree.chain_to(&robot, &ee_link, &drive_of, joints.len());
        let home = home_pose(&joints, &config)?;

        let physics = physics_options();
        let mut meshes = MeshFiles::default();
        let mut template = build_template(&robot, &physics, &mut meshes, &urdf_path)?;
        let link_names: Vec<String> = template
            .links
            .iter()
            .map(|l| robot.links[l.urdf_link_index].name.clone())
            .collect();
        check_colliders(&robot, &template, &link_names, &urdf_path)?;
        simplify_hulls(&mut template, &config);
        apply_collision_overrides(&mut template, &link_names, &config)?;
        let template_joint = template
            .joints
            .iter()
            .enumerate()
            .map(|(i, j)| (robot.joints[j.urdf_joint_index].name.clone(), i))
            .collect();
        let visuals = load_visuals(&robot, &link_names, &mut meshes, &urdf_path)?;
        let turns_about_vertical = link_names
            .iter()
            .map(|link| tree.turns_about_vertical(&robot, link))
            .collect();

        tracing::debug!(
            arm = %robot.name,
            urdf = %urdf_path.display(),
            source = if urdf_files::is_embedded(&urdf_path) { "embedded" } else { "disk" },
            "arm loaded"
        );
        Ok(Arc::new(Self {
            name: robot.name.clone(),
            urdf_path,
            config,
            joints,
            mimics,
            ee_link,
            chain,
            home,
            template,
            template_joint,
            visuals,
            link_names,
            turns_about_vertical,
        }))
    }

    /// Whether this arm was loaded from the files compiled into the binary
    /// rather than from disk.
    pub fn is_embedded(&self) -> bool {
        urdf_files::is_embedded(&self.urdf_path)
    }

    pub fn joint_names(&self) -> Vec<&str> {
        self.joints.iter().map(|j| j.name.as_str()).collect()
    }

    pub fn lower(&self) -> Vec<f64> {
        self.joints.iter().map(|j| j.lower as f64).collect()
    }

    pub fn upper(&self) -> Vec<f64> {
        self.joints.iter().map(|j| j.upper as f64).collect()
    }

    /// Which actuated coordinates move the end effector (the gripper jaw and
    /// joints on other branches do not).
    pub fn moves_end_effector(&self) -> Vec<bool> {
        let mut movable = vec![false; self.joints.len()];
        for joint in &self.chain.joints {
            if let Some(drive) = &joint.drive {
                movable[drive.index] = true;
            }
        }
        movable
    }

    /// End-effector position in the world for joint positions `q`.
    pub fn ee_position(&self, q: &[f32]) -> [f32; 3] {
        let q: Vec<f64> = q.iter().map(|&v| v as f64).collect();
        let p = self.chain.forward(&q).translation.vector;
        [p.x as f32, p.y as f32, p.z as f32]
    }

    /// Height of the lowest joint frame or end effector for joint positions
    /// `q` (m): below the table top means the pose is not physically reachable.
    pub fn lowest_point(&self, q: &[f32]) -> f32 {
        let q: Vec<f64> = q.iter().map(|&v| v as f64).collect();
        self.chain.lowest_height(&q) as f32
    }

    /// Index of the actuated joint called `name`.
    pub fn joint_index(&self, name: &str) -> Option<usize> {
        self.joints.iter().position(|j| j.name == name)
    }
}

/// The largest distance a URDF may give (m): an origin, a size, a
/// radius. Far beyond any arm, and small enough that its square and sums
/// stay finite in `f32`, the precision rapier computes in.
pub const MAX_LENGTH: f64 = 1e3;
/// The largest angle (rad) an `rpy` or a revolute joint limit may give.
pub const MAX_ANGLE: f64 = 1e3;
/// The largest mass (kg) of a link.
pub const MAX_MASS: f64 = 1e6;
/// The largest moment or product of inertia (kg·m²) of a link.
pub const MAX_INERTIA: f64 = 1e6;
/// The largest effort (N·m or N) and velocity (rad/s or m/s) limit.
pub const MAX_EFFORT: f64 = 1e9;
/// The largest factor a mesh may be scaled by, or a mimic joint may
/// multiply its leader's position by.
pub const MAX_SCALE: f64 = 1e3;

/// `value` is finite and in `[lo, hi]`; otherwise a refusal naming
/// `what`, the value (as written, NaN and infinities included) and the
/// accepted range.
fn check_in(what: &str, value: f64, lo: f64, hi: f64, unit: &str) -> Result<(), String> {
    if value.is_finite() && (lo..=hi).contains(&value) {
        return Ok(());
    }
    Err(format!(
        "{what} = {value:?}: must be a finite number in [{lo:?}, {hi:?}]{}{unit}",
        if unit.is_empty() { "" } else { " " }
    ))
}

/// Each of `values` is finite and within ±`max`.
fn check_each(what: &str, values: &[f64], max: f64, unit: &str) -> Result<(), String> {
    if values.iter().all(|v| v.is_finite() && v.abs() <= max) {
        return Ok(());
    }
    Err(format!(
        "{what} = {values:?}: each must be a finite number in [{:?}, {max:?}]{}{unit}",
        -max,
        if unit.is_empty() { "" } else { " " }
    ))
}

fn check_origin(element: &str, origin: &urdf_rs::Pose) -> Result<(), String> {
    check_each(
        &format!("{element} <origin> xyz"),
        &origin.xyz.0,
        MAX_LENGTH,
        "m",
    )?;
    check_each(
        &format!("{element} <origin> rpy"),
        &origin.rpy.0,
        MAX_ANGLE,
        "rad",
    )
}

fn check_geometry(element: &str, geometry: &Geometry) -> Result<(), String> {
    let length = |what: &str, value: f64| {
        check_in(&format!("{element} {what}"), value, 0.0, MAX_LENGTH, "m")
    };
    match geometry {
        Geometry::Box { size } => {
            let what = format!("{element} <box> size");
            check_each(&what, &size.0, MAX_LENGTH, "m")?;
            if size.0.iter().any(|&s| s < 0.0) {
                return Err(format!(
                    "{what} = {:?}: each must be a finite number in [0.0, {MAX_LENGTH:?}] m",
                    size.0
                ));
            }
            Ok(())
        }
        Geometry::Cylinder { radius, length: l } => {
            length("<cylinder> radius", *radius)?;
            length("<cylinder> length", *l)
        }
        Geometry::Capsule { radius, length: l } => {
            length("<capsule> radius", *radius)?;
            length("<capsule> length", *l)
        }
        Geometry::Sphere { radius } => length("<sphere> radius", *radius),
        Geometry::Mesh { scale, .. } => match scale {
            Some(scale)
                if !scale
                    .0
                    .iter()
                    .all(|s| s.is_finite() && *s != 0.0 && s.abs() <= MAX_SCALE) =>
            {
                Err(format!(
                    "{element} <mesh> scale = {:?}: each must be a finite, non-zero number in [{:?}, {MAX_SCALE:?}]",
                    scale.0, -MAX_SCALE
                ))
            }
            _ => Ok(()),
        },
    }
}

/// A link's mass and inertia: finite, the mass in `[0, MAX_MASS]`, the
/// moments of inertia non-negative and the tensor positive semi-definite
/// (its principal moments, which rapier takes from it, non-negative).
fn check_inertial(element: &str, inertial: &urdf_rs::Inertial) -> Result<(), String> {
    let element = format!("{element} <inertial>");
    check_origin(&element, &inertial.origin)?;
    check_in(
        &format!("{element} <mass> value"),
        inertial.mass.value,
        0.0,
        MAX_MASS,
        "kg",
    )?;
    let i = &inertial.inertia;
    for (name, value, lo) in [
        ("ixx", i.ixx, 0.0),
        ("iyy", i.iyy, 0.0),
        ("izz", i.izz, 0.0),
        ("ixy", i.ixy, -MAX_INERTIA),
        ("ixz", i.ixz, -MAX_INERTIA),
        ("iyz", i.iyz, -MAX_INERTIA),
    ] {
        check_in(
            &format!("{element} <inertia> {name}"),
            value,
            lo,
            MAX_INERTIA,
            "kg·m²",
        )?;
    }
    let tensor = nalgebra::Matrix3::new(
        i.ixx, i.ixy, i.ixz, //
        i.ixy, i.iyy, i.iyz, //
        i.ixz, i.iyz, i.izz,
    );
    let moments = tensor.symmetric_eigenvalues();
    let largest = moments.max().max(0.0);
    let smallest = moments.min();
    // Rounded URDF values leave a principal moment a hair below zero.
    if smallest < -1e-6 * largest.max(1e-12) {
        return Err(format!(
            "{element} <inertia> (ixx {:?}, iyy {:?}, izz {:?}, ixy {:?}, ixz {:?}, iyz {:?}) has a negative principal moment {smallest:?} kg·m²: an inertia tensor must be positive semi-definite",
            i.ixx, i.iyy, i.izz, i.ixy, i.ixz, i.iyz
        ));
    }
    Ok(())
}

fn check_joint(joint: &urdf_rs::Joint) -> Result<(), String> {
    let element = format!("joint `{}`", joint.name);
    check_origin(&element, &joint.origin)?;
    let axis = &joint.axis.xyz.0;
    let what = format!("{element} <axis> xyz");
    check_each(&what, axis, MAX_SCALE, "")?;
    let moves = matches!(
        joint.joint_type,
        JointType::Revolute | JointType::Continuous | JointType::Prismatic
    );
    if moves && axis.iter().map(|a| a * a).sum::<f64>().sqrt() < 1e-9 {
        return Err(format!(
            "{what} = {axis:?}: a {:?} joint's axis must be a direction, not zero",
            joint.joint_type
        ));
    }
    let (range, unit) = match joint.joint_type {
        JointType::Prismatic => (MAX_LENGTH, "m"),
        _ => (MAX_ANGLE, "rad"),
    };
    let limit = &joint.limit;
    check_in(
        &format!("{element} <limit> lower"),
        limit.lower,
        -range,
        range,
        unit,
    )?;
    check_in(
        &format!("{element} <limit> upper"),
        limit.upper,
        -range,
        range,
        unit,
    )?;
    check_in(
        &format!("{element} <limit> effort"),
        limit.effort,
        0.0,
        MAX_EFFORT,
        "",
    )?;
    check_in(
        &format!("{element} <limit> velocity"),
        limit.velocity,
        0.0,
        MAX_EFFORT,
        "",
    )?;
    if matches!(joint.joint_type, JointType::Revolute | JointType::Prismatic)
        && limit.lower > limit.upper
    {
        return Err(format!(
            "{element} <limit> lower = {:?} is above upper = {:?}: a joint's range must have lower ≤ upper (equal for no limit)",
            limit.lower, limit.upper
        ));
    }
    if let Some(mimic) = &joint.mimic {
        if let Some(multiplier) = mimic.multiplier {
            check_in(
                &format!("{element} <mimic> multiplier"),
                multiplier,
                -MAX_SCALE,
                MAX_SCALE,
                "",
            )?;
        }
        if let Some(offset) = mimic.offset {
            check_in(
                &format!("{element} <mimic> offset"),
                offset,
                -range,
                range,
                unit,
            )?;
        }
    }
    Ok(())
}

/// Every number of the URDF within its accepted range, names unique:
/// nothing that is not a finite, physically meaningful value reaches the
/// kinematics or rapier (a NaN panics inside rapier; an inverted limit or
/// a zero axis would be silently taken for something else).
fn check_numbers(robot: &urdf_rs::Robot, urdf: &Path) -> Result<(), ModelError> {
    let invalid = |message: String| ModelError::Invalid {
        urdf: urdf.to_path_buf(),
        message,
    };
    let mut names = std::collections::HashSet::new();
    for link in &robot.links {
        if !names.insert(link.name.as_str()) {
            return Err(invalid(format!("two links are named `{}`", link.name)));
        }
        let element = format!("link `{}`", link.name);
        check_inertial(&element, &link.inertial).map_err(invalid)?;
        for (i, visual) in link.visual.iter().enumerate() {
            let element = format!("{element} <visual> #{}", i + 1);
            check_origin(&element, &visual.origin).map_err(invalid)?;
            check_geometry(&element, &visual.geometry).map_err(invalid)?;
            if let Some(color) = visual.material.as_ref().and_then(|m| m.color.as_ref()) {
                check_each(&format!("{element} <color> rgba"), &color.rgba.0, 1.0, "")
                    .map_err(invalid)?;
            }
        }
        for (i, collision) in link.collision.iter().enumerate() {
            let element = format!("{element} <collision> #{}", i + 1);
            check_origin(&element, &collision.origin).map_err(invalid)?;
            check_geometry(&element, &collision.geometry).map_err(invalid)?;
        }
    }
    for material in &robot.materials {
        if let Some(color) = &material.color {
            check_each(
                &format!("material `{}` <color> rgba", material.name),
                &color.rgba.0,
                1.0,
                "",
            )
            .map_err(invalid)?;
        }
    }
    let mut names = std::collections::HashSet::new();
    for joint in &robot.joints {
        if !names.insert(joint.name.as_str()) {
            return Err(invalid(format!("two joints are named `{}`", joint.name)));
        }
        check_joint(joint).map_err(invalid)?;
    }
    Ok(())
}

/// Makes every mesh path absolute and checks the file exists: relative paths
/// are relative to the URDF, `package://NAME/rest` is looked up in the
/// folders above the URDF (and in `ROS_PACKAGE_PATH`, for a URDF on disk),
/// `file://` is stripped. The meshes of an embedded URDF resolve inside the
/// embedded tree.
fn resolve_meshes(
    robot: &mut urdf_rs::Robot,
    urdf: &Path,
    urdf_dir: &Path,
) -> Result<(), ModelError> {
    for link in &mut robot.links {
        let link_name = link.name.clone();
        let visuals = link
            .visual
            .iter_mut()
            .enumerate()
            .map(|(i, v)| (format!("<visual> #{}", i + 1), &mut v.geometry));
        let collisions = link
            .collision
            .iter_mut()
            .enumerate()
            .map(|(i, c)| (format!("<collision> #{}", i + 1), &mut c.geometry));
        for (element, geometry) in visuals.chain(collisions) {
            if let Geometry::Mesh { filename, .. } = geometry {
                let resolved =
                    resolve_mesh_uri(filename, urdf_dir).ok_or_else(|| ModelError::Mesh {
                        urdf: urdf.to_path_buf(),
                        link: link_name.clone(),
                        element: element.clone(),
                        mesh: filename.clone(),
                        problem: "does not exist".into(),
                    })?;
                *filename = resolved.to_string_lossy().into_owned();
            }
        }
    }
    Ok(())
}

fn resolve_mesh_uri(uri: &str, urdf_dir: &Path) -> Option<PathBuf> {
    if let Some(rest) = uri.strip_prefix("package://") {
        let (package, relative) = rest.split_once('/')?;
        let embedded = urdf_files::is_embedded(urdf_dir);
        let mut roots: Vec<PathBuf> = urdf_dir
            .ancestors()
            .filter(|root| !embedded || urdf_files::is_embedded(root))
            .map(Path::to_path_buf)
            .collect();
        if let Some(paths) = std::env::var_os("ROS_PACKAGE_PATH")
            && !embedded
        {
            roots.extend(std::env::split_paths(&paths));
        }
        return roots.iter().find_map(|root| {
            let candidates = [
                (root.file_name()? == package).then(|| root.join(relative)),
                Some(root.join(package).join(relative)),
            ];
            candidates
                .into_iter()
                .flatten()
                .find(|p| urdf_files::is_file(p))
        });
    }
    let path = uri.strip_prefix("file://").unwrap_or(uri);
    let path = urdf_dir.join(path);
    urdf_files::is_file(&path).then_some(path)
}

/// Zeroes the inertia of massless links without geometry (tool frames, TCPs)
/// so that rapier3d-urdf merges them into their parent instead of creating a
/// massless rigid body; the kinematic chain keeps them as frames.
fn demote_frame_links(robot: &mut urdf_rs::Robot) {
    for link in &mut robot.links {
        if link.visual.is_empty()
            && link.collision.is_empty()
            && link.inertial.mass.value < FRAME_LINK_MASS
        {
            link.inertial = urdf_rs::Inertial::default();
        }
    }
}

/// The URDF's link tree.
struct Tree {
    /// Child link name → index of the joint that attaches it.
    parent_joint: HashMap<String, usize>,
    children: HashMap<String, Vec<usize>>,
    root: String,
}

impl Tree {
    fn new(robot: &urdf_rs::Robot, urdf: &Path) -> Result<Self, ModelError> {
        let structure = |message: String| ModelError::Structure {
            urdf: urdf.to_path_buf(),
            message,
        };
        let link_names: std::collections::HashSet<&str> =
            robot.links.iter().map(|l| l.name.as_str()).collect();
        let mut parent_joint = HashMap::new();
        let mut children: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, joint) in robot.joints.iter().enumerate() {
            for link in [&joint.parent.link, &joint.child.link] {
                if !link_names.contains(link.as_str()) {
                    return Err(structure(format!(
                        "joint `{}` names link `{link}`, which is not defined",
                        joint.name
                    )));
                }
            }
            if parent_joint.insert(joint.child.link.clone(), i).is_some() {
                return Err(structure(format!(
                    "link `{}` is the child of two joints",
                    joint.child.link
                )));
            }
            children
                .entry(joint.parent.link.clone())
                .or_default()
                .push(i);
        }
        let roots: Vec<&str> = robot
            .links
            .iter()
            .map(|l| l.name.as_str())
            .filter(|l| !parent_joint.contains_key(*l))
            .collect();
        match roots.as_slice() {
            [root] => Ok(Self {
                parent_joint,
                children,
                root: (*root).to_owned(),
            }),
            [] => Err(structure("the joints form a cycle: no root link".into())),
            many => Err(structure(format!(
                "expected one root link, found {}: {}",
                many.len(),
                many.join(", ")
            ))),
        }
    }

    fn leaves(&self, robot: &urdf_rs::Robot) -> Vec<String> {
        robot
            .links
            .iter()
            .map(|l| l.name.clone())
            .filter(|l| !self.children.contains_key(l))
            .collect()
    }

    /// Whether every joint between the root and `link` is fixed or revolute
    /// about the world's vertical axis (at the zero pose, and then at every
    /// pose, since turning about the vertical keeps vertical axes vertical).
    /// URDF angles are rounded (the SO-101's pan axis is tilted by 3e-6 rad),
    /// so axes within 1e-4 rad of vertical count: over a 1 m reach that moves
    /// a point by 0.1 mm, a tenth of `world::TABLE_CLEARANCE`.
    fn turns_about_vertical(&self, robot: &urdf_rs::Robot, link: &str) -> bool {
        let mut joints = Vec::new();
        let mut link = link;
        while let Some(&index) = self.parent_joint.get(link) {
            joints.push(&robot.joints[index]);
            link = &robot.joints[index].parent.link;
        }
        let mut rotation = nalgebra::UnitQuaternion::identity();
        joints.iter().rev().all(|joint| {
            rotation *= urdf_origin(joint.origin.xyz.0, joint.origin.rpy.0).rotation;
            match joint.joint_type {
                JointType::Fixed => true,
                JointType::Revolute | JointType::Continuous => {
                    let axis = rotation * nalgebra::Vector3::from(joint.axis.xyz.0);
                    axis.xy().norm() <= 1e-4 * axis.norm()
                }
                _ => false,
            }
        })
    }

    fn chain_to(
        &self,
        robot: &urdf_rs::Robot,
        ee_link: &str,
        drive_of: &HashMap<String, JointDrive>,
        num_coordinates: usize,
    ) -> Chain {
        let mut joints = Vec::new();
        let mut link = ee_link.to_owned();
        while let Some(&index) = self.parent_joint.get(&link) {
            let joint = &robot.joints[index];
            let kind = match joint.joint_type {
                JointType::Revolute | JointType::Continuous => ChainJointKind::Revolute,
                JointType::Prismatic => ChainJointKind::Prismatic,
                _ => ChainJointKind::Fixed,
            };
            let axis = nalgebra::Vector3::from(joint.axis.xyz.0);
            joints.push(ChainJoint {
                name: joint.name.clone(),
                origin: urdf_origin(joint.origin.xyz.0, joint.origin.rpy.0),
                axis: axis.try_normalize(1e-12).unwrap_or(nalgebra::Vector3::x()),
                kind,
                drive: drive_of.get(&joint.name).copied(),
            });
            link = joint.parent.link.clone();
        }
        joints.reverse();
        Chain {
            base: nalgebra::Isometry3::identity(),
            joints,
            num_coordinates,
        }
    }
}

type Drives = HashMap<String, JointDrive>;

/// Actuated joints in depth-first order, mimic joints, and each moving
/// joint's drive.
fn actuated_joints(
    robot: &urdf_rs::Robot,
    tree: &Tree,
    config: &RobotConfig,
    urdf: &Path,
) -> Result<(Vec<ActuatedJoint>, Vec<MimicJoint>, Drives), ModelError> {
    let mut order = Vec::new();
    let mut stack = vec![tree.root.clone()];
    while let Some(link) = stack.pop() {
        if let Some(children) = tree.children.get(&link) {
            for &joint in children.iter().rev() {
                stack.push(robot.joints[joint].child.link.clone());
            }
            order.extend(children.iter().copied());
        }
    }
    let mut joints = Vec::new();
    let mut drives = Drives::new();
    let mut mimic_sources = Vec::new();
    for &index in &order {
        let joint = &robot.joints[index];
        let motion = match joint.joint_type {
            JointType::Revolute | JointType::Continuous => JointMotion::Revolute,
            JointType::Prismatic => JointMotion::Prismatic,
            JointType::Fixed => continue,
            ref other => {
                return Err(ModelError::Structure {
                    urdf: urdf.to_path_buf(),
                    message: format!(
                        "joint `{}` is {other:?}; only revolute, continuous, prismatic and fixed joints can be driven",
                        joint.name
                    ),
                });
            }
        };
        if let Some(mimic) = &joint.mimic {
            mimic_sources.push((joint, mimic, motion));
            continue;
        }
        let (lower, upper) = if joint.joint_type == JointType::Continuous
            || joint.limit.lower >= joint.limit.upper
        {
            (-std::f64::consts::TAU, std::f64::consts::TAU)
        } else {
            (joint.limit.lower, joint.limit.upper)
        };
        drives.insert(
            joint.name.clone(),
            JointDrive {
                index: joints.len(),
                multiplier: 1.0,
                offset: 0.0,
            },
        );
        joints.push(ActuatedJoint {
            name: joint.name.clone(),
            motion,
            lower: lower as f32,
            upper: upper as f32,
            effort: joint.limit.effort as f32,
            actuator: config.actuator_for(&joint.name, joint.limit.effort as f32),
        });
    }
    let mut mimics = Vec::new();
    for (joint, mimic, motion) in mimic_sources {
        let leader = drives
            .get(&mimic.joint)
            .ok_or_else(|| ModelError::Structure {
                urdf: urdf.to_path_buf(),
                message: format!(
                    "joint `{}` mimics `{}`, which is not an actuated joint",
                    joint.name, mimic.joint
                ),
            })?
            .index;
        let multiplier = mimic.multiplier.unwrap_or(1.0);
        let offset = mimic.offset.unwrap_or(0.0);
        drives.insert(
            joint.name.clone(),
            JointDrive {
                index: leader,
                multiplier,
                offset,
            },
        );
        mimics.push(MimicJoint {
            name: joint.name.clone(),
            motion,
            leader,
            multiplier: multiplier as f32,
            offset: offset as f32,
        });
    }
    if joints.is_empty() {
        return Err(ModelError::Structure {
            urdf: urdf.to_path_buf(),
            message: "no actuated joints".into(),
        });
    }
    for name in config.actuators.keys() {
        if !joints.iter().any(|j| &j.name == name) {
            return Err(ModelError::Config(format!(
                "robot config names actuator `{name}`, which is not an actuated joint of {}",
                urdf.display()
            )));
        }
    }
    Ok((joints, mimics, drives))
}

fn choose_end_effector(
    robot: &urdf_rs::Robot,
    tree: &Tree,
    options: &ArmOptions,
    config: &RobotConfig,
    urdf: &Path,
) -> Result<String, ModelError> {
    if let Some(name) = options.ee_link.as_ref().or(config.ee_link.as_ref()) {
        if robot.links.iter().any(|l| &l.name == name) {
            return Ok(name.clone());
        }
        return Err(ModelError::UnknownLink {
            urdf: urdf.to_path_buf(),
            name: name.clone(),
            links: robot.links.iter().map(|l| l.name.clone()).collect(),
        });
    }
    let leaves = tree.leaves(robot);
    match leaves.as_slice() {
        [only] => Ok(only.clone()),
        _ => Err(ModelError::AmbiguousEndEffector {
            urdf: urdf.to_path_buf(),
            candidates: leaves,
        }),
    }
}

fn home_pose(joints: &[ActuatedJoint], config: &RobotConfig) -> Result<Vec<f32>, ModelError> {
    for name in config.home.keys() {
        if !joints.iter().any(|j| &j.name == name) {
            return Err(ModelError::Config(format!(
                "home pose names `{name}`, which is not an actuated joint"
            )));
        }
    }
    Ok(joints
        .iter()
        .map(|j| match config.home.get(&j.name) {
            Some(&q) => q.clamp(j.lower, j.upper),
            None if j.lower <= 0.0 && 0.0 <= j.upper => 0.0,
            None => 0.5 * (j.lower + j.upper),
        })
        .collect())
}

/// How the URDF becomes rapier bodies and colliders.
fn physics_options() -> UrdfLoaderOptions {
    UrdfLoaderOptions {
        make_roots_fixed: true,
        mesh_converter: Some(MeshConverter::ConvexHull),
        collider_blueprint: ColliderBuilder::default()
            .density(0.0)
            .friction(1.0)
            .collision_groups(robot_collision_groups()),
        // A sleeping arm would ignore new servo targets.
        rigid_body_blueprint: RigidBodyBuilder::dynamic().can_sleep(false),
        ..Default::default()
    }
}

/// The meshes a URDF names, each read (through `urdf_files::read`, so from
/// the binary for an embedded arm) and parsed once, for the colliders and
/// the camera alike.
#[derive(Default)]
struct MeshFiles {
    parsed: HashMap<String, Rc<Vec<mesh_loader::Mesh>>>,
}

impl MeshFiles {
    /// The triangle meshes in the file at `path` (resolved by
    /// `resolve_meshes`); the format comes from its extension.
    fn get(&mut self, path: &str) -> std::io::Result<Rc<Vec<mesh_loader::Mesh>>> {
        if let Some(meshes) = self.parsed.get(path) {
            return Ok(meshes.clone());
        }
        let loader: mesh_loader::Loader<Cow<'static, [u8]>> =
            mesh_loader::Loader::with_custom_reader(urdf_files::read);
        let meshes = Rc::new(loader.load(path)?.meshes);
        self.parsed.insert(path.to_owned(), meshes.clone());
        Ok(meshes)
    }
}

/// rapier3d-urdf's bodies, joints and primitive colliders, with the mesh
/// colliders built here from `meshes` exactly as rapier3d-urdf builds them
/// from files on disk (each part converted by `physics.mesh_converter`, posed
/// at the element's origin, in the link's `<collision>` order), except that
/// no triangle-mesh visual is kept beside a hull: the camera draws
/// `ArmModel::visuals`. A mesh that cannot be read is an error naming it.
fn build_template(
    robot: &urdf_rs::Robot,
    physics: &UrdfLoaderOptions,
    meshes: &mut MeshFiles,
    urdf: &Path,
) -> Result<UrdfRobot, ModelError> {
    // rapier3d-urdf skips a zero-sized box, so replacing each mesh by one
    // keeps every link's elements (and so which links are empty and merged
    // away) while it builds everything but the meshes.
    let mut without_meshes = robot.clone();
    for link in &mut without_meshes.links {
        for collision in &mut link.collision {
            if matches!(collision.geometry, Geometry::Mesh { .. }) {
                collision.geometry = Geometry::Box {
                    size: urdf_rs::Vec3([0.0; 3]),
                };
            }
        }
    }
    let mut template = UrdfRobot::from_robot(&without_meshes, physics.clone(), Path::new("/"));
    let converter = physics
        .mesh_converter
        .unwrap_or(MeshConverter::TriMeshWithFlags(physics.trimesh_flags));
    for link in &mut template.links {
        let source = &robot.links[link.urdf_link_index];
        let mut primitives = std::mem::take(&mut link.colliders).into_iter();
        for (i, collision) in source.collision.iter().enumerate() {
            match &collision.geometry {
                Geometry::Mesh { filename, scale } => {
                    let raw = meshes.get(filename).map_err(|e| ModelError::Mesh {
                        urdf: urdf.to_path_buf(),
                        link: source.name.clone(),
                        element: format!("<collision> #{}", i + 1),
                        mesh: filename.clone(),
                        problem: format!("could not be loaded: {e}"),
                    })?;
                    let scale = scale
                        .map(|s| Vector::new(s[0] as f32, s[1] as f32, s[2] as f32))
                        .unwrap_or(Vector::splat(1.0))
                        * physics.scale;
                    let mut origin = urdf_pose(&collision.origin);
                    origin.translation *= physics.scale;
                    for mesh in raw.iter() {
                        let Ok((shape, pose)) =
                            rapier3d_meshloader::load_from_raw_mesh(mesh, &converter, scale)
                        else {
                            continue;
                        };
                        let mut builder = physics.collider_blueprint.clone();
                        builder.shape = shape;
                        link.colliders.push(UrdfCollider {
                            collider: builder.position(origin * pose).build(),
                            visual: None,
                        });
                    }
                }
                Geometry::Box { size } if size.0 == [0.0; 3] => {}
                _ => link.colliders.extend(primitives.next()),
            }
        }
    }
    Ok(template)
}

/// A URDF `<origin>` as rapier3d-urdf turns it into a pose (fixed-axis
/// roll-pitch-yaw), in `f32` as it computes it, so that mesh colliders sit
/// bit for bit where it would put them.
fn urdf_pose(pose: &urdf_rs::Pose) -> Pose {
    Pose::from_parts(
        Vector::new(pose.xyz[0] as f32, pose.xyz[1] as f32, pose.xyz[2] as f32),
        rapier3d::math::Rotation::from_euler(
            rapier3d::glamx::EulerRot::ZYX,
            pose.rpy[2] as f32,
            pose.rpy[1] as f32,
            pose.rpy[0] as f32,
        ),
    )
}

/// rapier3d-urdf skips a mesh that fails to load; a link that should have a
/// collider and has none is an error here.
fn check_colliders(
    robot: &urdf_rs::Robot,
    template: &UrdfRobot,
    link_names: &[String],
    urdf: &Path,
) -> Result<(), ModelError> {
    for (link, name) in template.links.iter().zip(link_names) {
        let source = &robot.links[link.urdf_link_index];
        let meshes = source
            .collision
            .iter()
            .filter(|c| matches!(c.geometry, Geometry::Mesh { .. }))
            .count();
        let primitives = source.collision.len() - meshes;
        if meshes > 0 && link.colliders.len() < primitives + meshes {
            let mesh = source
                .collision
                .iter()
                .find_map(|c| match &c.geometry {
                    Geometry::Mesh { filename, .. } => Some(filename.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            return Err(ModelError::Mesh {
                urdf: urdf.to_path_buf(),
                link: name.clone(),
                element: "<collision>".into(),
                mesh,
                problem: "could not be loaded as a mesh (unsupported format or corrupt file)"
                    .into(),
            });
        }
    }
    Ok(())
}

/// Replaces every mesh's exact convex hull by one with fewer vertices (see
/// `hull.rs`); the colliders carry no mass, so only contact geometry changes.
fn simplify_hulls(template: &mut UrdfRobot, config: &RobotConfig) {
    let tolerance = config.hull_tolerance.unwrap_or(hull::DEFAULT_TOLERANCE);
    for link in &mut template.links {
        for urdf_collider in &mut link.colliders {
            let collider = &mut urdf_collider.collider;
            let simplified = collider
                .shape()
                .as_convex_polyhedron()
                .and_then(|hull| hull::simplify(hull.points(), tolerance))
                .and_then(|points| SharedShape::convex_hull(&points));
            if let Some(shape) = simplified {
                collider.set_shape(shape);
            }
        }
    }
}

/// Replaces the colliders of the configured links with box pads.
fn apply_collision_overrides(
    template: &mut UrdfRobot,
    link_names: &[String],
    config: &RobotConfig,
) -> Result<(), ModelError> {
    let index_of = |name: &str| {
        link_names.iter().position(|l| l == name).ok_or_else(|| {
            ModelError::Config(format!(
                "robot config names link `{name}`, which is not a body of the URDF"
            ))
        })
    };
    for name in &config.replace_collision {
        template.links[index_of(name)?].colliders.clear();
    }
    for pad in &config.pads {
        let link = index_of(&pad.link)?;
        let [hx, hy, hz] = pad.half_extents;
        let [cx, cy, cz] = pad.center;
        let collider = ColliderBuilder::cuboid(hx, hy, hz)
            .translation(Vector::new(cx, cy, cz))
            .collision_groups(robot_collision_groups())
            .density(0.0)
            .friction(1.0)
            .build();
        template.links[link]
            .colliders
            .push(rapier3d_urdf::UrdfCollider {
                collider,
                visual: None,
            });
    }
    Ok(())
}

fn material_rgb(robot: &urdf_rs::Robot, material: Option<&urdf_rs::Material>) -> [f32; 3] {
    let named = |name: &str| robot.materials.iter().find(|m| m.name == name);
    material
        .and_then(|m| m.color.clone().or_else(|| named(&m.name)?.color.clone()))
        .map(|c| [c.rgba.0[0] as f32, c.rgba.0[1] as f32, c.rgba.0[2] as f32])
        .unwrap_or([0.6, 0.6, 0.6])
}

/// A mesh file and its scale (as bits, so the key is `Ord`).
type MeshKey = (String, [u32; 3]);

/// Triangle meshes of every `<visual>`, for the camera; a mesh file shared by
/// several links is read once.
fn load_visuals(
    robot: &urdf_rs::Robot,
    link_names: &[String],
    meshes: &mut MeshFiles,
    urdf: &Path,
) -> Result<Vec<Vec<VisualShape>>, ModelError> {
    let mut cache: BTreeMap<MeshKey, Vec<(SharedShape, Pose)>> = BTreeMap::new();
    let by_name: HashMap<&str, &urdf_rs::Link> =
        robot.links.iter().map(|l| (l.name.as_str(), l)).collect();
    let mut visuals = Vec::with_capacity(link_names.len());
    for name in link_names {
        let link = by_name[name.as_str()];
        let mut shapes = Vec::new();
        for (i, visual) in link.visual.iter().enumerate() {
            let origin = urdf_origin(visual.origin.xyz.0, visual.origin.rpy.0);
            let origin = pose_from_isometry(&origin);
            let rgb = material_rgb(robot, visual.material.as_ref());
            let loaded: Vec<(SharedShape, Pose)> = match &visual.geometry {
                Geometry::Mesh { filename, scale } => {
                    let scale = scale.map(|s| s.0).unwrap_or([1.0; 3]);
                    let key = (filename.clone(), scale.map(|s| (s as f32).to_bits()));
                    if let Some(shapes) = cache.get(&key) {
                        shapes.clone()
                    } else {
                        let mesh_error = |problem: String| ModelError::Mesh {
                            urdf: urdf.to_path_buf(),
                            link: name.clone(),
                            element: format!("<visual> #{}", i + 1),
                            mesh: filename.clone(),
                            problem,
                        };
                        let scale = Vector::new(scale[0] as f32, scale[1] as f32, scale[2] as f32);
                        let raw = meshes
                            .get(filename)
                            .map_err(|e| mesh_error(format!("could not be loaded: {e}")))?;
                        // Simplified for the camera (`camera::simplify_mesh`):
                        // at the camera's resolutions the full CAD meshes
                        // cost far more than they show.
                        let parts: Vec<(SharedShape, Pose)> = raw
                            .iter()
                            .filter_map(|mesh| {
                                let vertices: Vec<Vector> = mesh
                                    .vertices
                                    .iter()
                                    .map(|&v| Vector::from(v) * scale)
                                    .collect();
                                let (vertices, faces) = crate::camera::simplify_mesh(
                                    &vertices,
                                    &mesh.faces,
                                    crate::camera::VISUAL_MESH_CELL,
                                );
                                let shape = SharedShape::trimesh(vertices, faces).ok()?;
                                Some((shape, Pose::IDENTITY))
                            })
                            .collect();
                        if parts.is_empty() {
                            return Err(mesh_error("holds no triangles".into()));
                        }
                        cache.insert(key, parts.clone());
                        parts
                    }
                }
                Geometry::Box { size } => vec![(
                    SharedShape::cuboid(
                        size.0[0] as f32 / 2.0,
                        size.0[1] as f32 / 2.0,
                        size.0[2] as f32 / 2.0,
                    ),
                    Pose::IDENTITY,
                )],
                Geometry::Sphere { radius } => {
                    vec![(SharedShape::ball(*radius as f32), Pose::IDENTITY)]
                }
                Geometry::Cylinder { radius, length } | Geometry::Capsule { radius, length } => {
                    // URDF cylinders run along z; parry's along y.
                    let to_z = Pose::from_rotation(rapier3d::math::Rotation::from_rotation_x(
                        std::f32::consts::FRAC_PI_2,
                    ));
                    let shape = if matches!(visual.geometry, Geometry::Cylinder { .. }) {
                        SharedShape::cylinder(*length as f32 / 2.0, *radius as f32)
                    } else {
                        SharedShape::capsule_y(*length as f32 / 2.0, *radius as f32)
                    };
                    vec![(shape, to_z)]
                }
            };
            shapes.extend(loaded.into_iter().map(|(shape, pose)| VisualShape {
                shape,
                local_pose: origin * pose,
                rgb,
            }));
        }
        visuals.push(shapes);
    }
    Ok(visuals)
}

/// The arm's colliders.
pub(crate) const ARM: Group = Group::GROUP_1;
/// Arm colliders that can never reach the table (see `ArmWorld::new`).
pub(crate) const CLEAR_OF_TABLE: Group = Group::GROUP_2;

/// The arm's links overlap where they meet; filtering arm–arm pairs in the
/// broad phase (rather than discarding their contacts afterwards) keeps the
/// narrow phase from computing them every step.
fn robot_collision_groups() -> InteractionGroups {
    InteractionGroups::new(
        ARM,
        Group::ALL.difference(ARM).difference(CLEAR_OF_TABLE),
        InteractionTestMode::And,
    )
}

pub(crate) fn pose_from_isometry(iso: &nalgebra::Isometry3<f64>) -> Pose {
    let t = iso.translation.vector;
    let q = iso.rotation.quaternion();
    Pose::from_parts(
        Vector::new(t.x as f32, t.y as f32, t.z as f32),
        rapier3d::math::Rotation::from_xyzw(q.i as f32, q.j as f32, q.k as f32, q.w as f32)
            .normalize(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collision_hulls(model: &ArmModel) -> Vec<Vec<Vector>> {
        let links = model.template.links.iter();
        links
            .flat_map(|link| &link.colliders)
            .filter_map(|c| Some(c.collider.shape().as_convex_polyhedron()?.points().to_vec()))
            .collect()
    }

    /// The SO-101's simplified hulls are small and lie within the tolerance
    /// of the exact ones.
    #[test]
    fn collision_hulls_are_simplified_within_tolerance() {
        let urdf = crate::so101_urdf();
        let simplified = collision_hulls(&ArmModel::load(&urdf, &ArmOptions::default()).unwrap());
        let config = std::env::temp_dir().join(format!("exact-hulls-{}.toml", std::process::id()));
        let text = urdf_files::read_to_string(&urdf.with_extension("toml")).unwrap();
        std::fs::write(&config, format!("hull_tolerance = 0.0\n{text}")).unwrap();
        let options = ArmOptions {
            config: Some(config.clone()),
            ..ArmOptions::default()
        };
        let exact = collision_hulls(&ArmModel::load(&urdf, &options).unwrap());
        std::fs::remove_file(&config).unwrap();

        assert_eq!(simplified.len(), exact.len());
        let exact_total: usize = exact.iter().map(Vec::len).sum();
        let simplified_total: usize = simplified.iter().map(Vec::len).sum();
        assert!(
            exact_total > 20 * simplified_total,
            "{exact_total} vs {simplified_total}"
        );
        for (simple, exact) in simplified.iter().zip(&exact) {
            assert!(simple.len() <= 200, "{} vertices", simple.len());
            let error = hull::max_distance_outside(exact, simple);
            assert!(error <= hull::DEFAULT_TOLERANCE + 1e-5, "{error} m");
        }
    }

    /// The SO-101 from its folder on disk, as the source tree has it.
    fn so101_on_disk() -> PathBuf {
        crate::so101_source_dir().join("so101_new_calib.urdf")
    }

    /// The mesh colliders built here from bytes are the ones rapier3d-urdf
    /// builds from the same files on disk: same links, same order, same
    /// poses and hull vertices, bit for bit.
    #[test]
    fn mesh_colliders_are_rapier3d_urdfs() {
        let urdf = so101_on_disk();
        let text = std::fs::read_to_string(&urdf).unwrap();
        let mut robot = urdf_rs::read_from_string(&text).unwrap();
        let dir = urdf.parent().unwrap().canonicalize().unwrap();
        resolve_meshes(&mut robot, &urdf, &dir).unwrap();
        demote_frame_links(&mut robot);
        let physics = physics_options();
        let theirs = UrdfRobot::from_robot(&robot, physics.clone(), Path::new("/"));
        let ours = build_template(&robot, &physics, &mut MeshFiles::default(), &urdf).unwrap();
        assert_eq!(ours.links.len(), theirs.links.len());
        let mut hulls = 0;
        for (a, b) in ours.links.iter().zip(&theirs.links) {
            assert_eq!(a.urdf_link_index, b.urdf_link_index);
            assert_eq!(a.colliders.len(), b.colliders.len());
            for (a, b) in a.colliders.iter().zip(&b.colliders) {
                let (a, b) = (&a.collider, &b.collider);
                assert_eq!(a.position(), b.position());
                assert_eq!(a.friction(), b.friction());
                assert_eq!(a.collision_groups(), b.collision_groups());
                let points = |c: &rapier3d::prelude::Collider| {
                    c.shape()
                        .as_convex_polyhedron()
                        .map(|h| h.points().to_vec())
                };
                assert_eq!(points(a), points(b));
                hulls += usize::from(points(a).is_some());
            }
        }
        assert!(hulls >= 10, "{hulls} mesh hulls");
    }

    /// The arm embedded in the binary loads from memory into the same model
    /// as the source tree's files on disk.
    #[test]
    fn the_embedded_so101_is_the_one_on_disk() {
        let embedded = ArmModel::load(&crate::so101_urdf(), &ArmOptions::default()).unwrap();
        let disk = ArmModel::load(&so101_on_disk(), &ArmOptions::default()).unwrap();
        assert!(embedded.is_embedded() && !disk.is_embedded());
        assert_eq!(embedded.joints, disk.joints);
        assert_eq!(embedded.config, disk.config);
        assert_eq!(embedded.home, disk.home);
        assert_eq!(embedded.ee_link, disk.ee_link);
        assert_eq!(collision_hulls(&embedded), collision_hulls(&disk));
        let triangles = |m: &ArmModel| -> Vec<Vec<usize>> {
            m.visuals
                .iter()
                .map(|shapes| {
                    shapes
                        .iter()
                        .map(|v| v.shape.as_trimesh().map_or(0, |t| t.num_triangles()))
                        .collect()
                })
                .collect()
        };
        assert_eq!(triangles(&embedded), triangles(&disk));
        // Simplified for the camera (`camera::simplify_mesh`), still
        // thousands.
        assert!(triangles(&embedded).iter().flatten().sum::<usize>() > 2_000);
    }
}
