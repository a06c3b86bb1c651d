//! Collision hulls with a bounded number of vertices.
//!
//! The exact convex hull of a CAD mesh has thousands of vertices (fillets,
//! screw holes, cylinder rims), and rapier pays for every one of them on
//! every physics step: a moved collider's broad-phase AABB and every
//! support-point query of the narrow phase scan the whole point cloud. On the
//! SO-101 that scan was two thirds of the step (see docs/BENCHMARKS.md).
//!
//! [`simplify`] keeps a subset of the exact hull's vertices, chosen the way
//! QuickHull grows a hull, and stops once no exact vertex lies more than
//! `tolerance` outside the simplified hull. The result sits inside the exact
//! hull and is at most `tolerance` smaller along any face normal.

use rapier3d::math::Vector;
use rapier3d::parry::transformation::convex_hull;

/// How far (m) the simplified hull may lie inside the exact one. Well below
/// rapier's contact prediction distance and the servo's tracking tolerance.
pub const DEFAULT_TOLERANCE: f32 = 0.0005;

/// Hulls with at most this many vertices are left alone.
const SMALL_HULL: usize = 32;

/// The vertices of a convex hull of `points` within `tolerance` of their
/// exact hull, or `None` when `points` is already small or flat (then the
/// exact hull is kept). Deterministic: the same input gives the same output.
pub fn simplify(points: &[Vector], tolerance: f32) -> Option<Vec<Vector>> {
    if points.len() <= SMALL_HULL || tolerance <= 0.0 {
        return None;
    }
    let mut chosen = vec![false; points.len()];
    let mut kept: Vec<usize> = Vec::new();
    // Seed with the extreme vertices along the 26 directions of a cube's
    // faces, edges and corners.
    for dx in -1i8..=1 {
        for dy in -1i8..=1 {
            for dz in -1i8..=1 {
                if (dx, dy, dz) == (0, 0, 0) {
                    continue;
                }
                let dir = Vector::new(dx as f32, dy as f32, dz as f32);
                keep(support(points, dir), &mut chosen, &mut kept);
            }
        }
    }
    loop {
        let subset: Vec<Vector> = kept.iter().map(|&i| points[i]).collect();
        let (vertices, triangles) = convex_hull(&subset);
        if triangles.len() < 4 {
            return None;
        }
        let planes = face_planes(&vertices, &triangles);
        // QuickHull's step: for each face, the vertex farthest outside it
        // among those that see it most.
        let mut farthest = vec![(tolerance, usize::MAX); planes.len()];
        for (i, p) in points.iter().enumerate() {
            if chosen[i] {
                continue;
            }
            let (face, distance) = planes.iter().map(|(n, d)| n.dot(*p) - d).enumerate().fold(
                (0, f32::NEG_INFINITY),
                |best, (f, dist)| {
                    if dist > best.1 { (f, dist) } else { best }
                },
            );
            if distance > farthest[face].0 {
                farthest[face] = (distance, i);
            }
        }
        let before = kept.len();
        for (_, i) in farthest {
            if i != usize::MAX {
                keep(i, &mut chosen, &mut kept);
            }
        }
        if kept.len() == before {
            return (kept.len() < points.len()).then_some(vertices);
        }
    }
}

/// Outward unit normal n and offset d (n·x = d) of each non-degenerate face.
fn face_planes(vertices: &[Vector], triangles: &[[u32; 3]]) -> Vec<(Vector, f32)> {
    triangles
        .iter()
        .filter_map(|t| {
            let [a, b, c] = t.map(|i| vertices[i as usize]);
            let normal = (b - a).cross(c - a).try_normalize()?;
            Some((normal, normal.dot(a)))
        })
        .collect()
}

/// Largest distance of any of `points` outside the convex hull of `hull`
/// (0 when all lie inside), for checking a simplification.
pub fn max_distance_outside(points: &[Vector], hull: &[Vector]) -> f32 {
    let (vertices, triangles) = convex_hull(hull);
    let planes = face_planes(&vertices, &triangles);
    points
        .iter()
        .map(|p| {
            planes
                .iter()
                .map(|(n, d)| n.dot(*p) - d)
                .fold(0.0f32, f32::max)
        })
        .fold(0.0, f32::max)
}

fn keep(i: usize, chosen: &mut [bool], kept: &mut Vec<usize>) {
    if !chosen[i] {
        chosen[i] = true;
        kept.push(i);
    }
}

fn support(points: &[Vector], dir: Vector) -> usize {
    let mut best = (0, f32::NEG_INFINITY);
    for (i, p) in points.iter().enumerate() {
        let d = p.dot(dir);
        if d > best.1 {
            best = (i, d);
        }
    }
    best.0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A finely tessellated cylinder (r 2 cm, h 4 cm) with a rounded rim.
    fn cylinder(segments: usize) -> Vec<Vector> {
        let mut points = Vec::new();
        for i in 0..segments {
            let a = i as f32 / segments as f32 * std::f32::consts::TAU;
            for z in [0.0, 0.001, 0.039, 0.04] {
                let r = if z == 0.0 || z == 0.04 { 0.019 } else { 0.02 };
                points.push(Vector::new(r * a.cos(), r * a.sin(), z));
            }
        }
        points
    }

    #[test]
    fn a_fine_cylinder_keeps_few_vertices_within_tolerance() {
        let exact = cylinder(512);
        let simple = simplify(&exact, DEFAULT_TOLERANCE).expect("simplified");
        assert!(simple.len() < 200, "{} vertices", simple.len());
        let error = max_distance_outside(&exact, &simple);
        assert!(error <= DEFAULT_TOLERANCE, "{error}");
        // Inside the exact hull.
        assert!(max_distance_outside(&simple, &exact) < 1e-6);
    }

    #[test]
    fn small_hulls_and_zero_tolerance_are_kept() {
        let cube: Vec<Vector> = (0..8)
            .map(|i| Vector::new((i & 1) as f32, (i >> 1 & 1) as f32, (i >> 2 & 1) as f32))
            .collect();
        assert!(simplify(&cube, DEFAULT_TOLERANCE).is_none());
        assert!(simplify(&cylinder(512), 0.0).is_none());
    }
}
