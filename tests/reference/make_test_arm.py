#!/usr/bin/env python3
"""A second test arm for Cerebellum: a 7-DoF industrial arm with a parallel gripper.

Writes the package folder sim/tests/fixtures/arms/test_arm7/ (URDFs, robot
config and meshes), which the Rust tests load with ``ArmModel::load``.

What the arm is. A heavy, KUKA-iiwa-like serial arm standing on the ground at
z = 0 and pointing straight up at all-zero joints (the world is Z-up): seven
revolute joints whose axes alternate z / y / z / y / z / y / z, with a small
Franka-style elbow offset (+5 cm at joint4, -5 cm at joint5), links of several
kg with inertias from cylinder and box formulas, effort limits from 300 N·m at
the base to 12 N·m at the wrist, and about 0.92 m of reach from the shoulder.
After the last wrist link come a massless ``flange`` frame (fixed joint), a
``hand`` rotated -45° about z (fixed joint with rpy), a two-finger parallel
gripper (prismatic ``finger_left_joint`` 0..0.04 m, and
``finger_right_joint`` mimicking it with an opposite axis) and a massless
``tool_frame`` between the fingertips (fixed joint). The meshes mix formats
and references on purpose: binary STL in millimetres with a ``scale``, ASCII
STL, OBJ with triangles, OBJ with quads and n-gons, OBJ with an ``mtllib``;
relative paths and ``package://test_arm7/...`` URIs; one STL shared by both
fingers (by two different URIs); and URDF primitives (cylinders, boxes, with
rotated origins). Every generated mesh shell is closed with outward normals
(checked below before writing). The URDF also carries elements Cerebellum
ignores (``<dynamics>``, ``<safety_controller>``, ``<transmission>``,
``<gazebo>``) because real URDFs do.

Why it exists. The SO-101 is the only arm Cerebellum ships: a 6-joint,
light, hobby arm with one revolute jaw and its own actuator gains. This arm
differs in every respect the loader and the simulator touch (7 joints,
prismatic mimic fingers, several leaf links, frame links, kg-scale masses,
no actuator gains so the defaults derived from URDF effort limits are used,
other mesh formats and URI styles), so tests that pass on both prove nothing
SO-101-specific hides in the code.

Files:
  urdf/test_arm7.urdf            the arm
  urdf/test_arm7.toml            robot config: ee_link, gripper, home pose
                                 (deliberately no actuator gains)
  urdf/test_arm7_no_config.urdf  the same bytes under a stem without a
                                 .toml, so its end effector is ambiguous
                                 (leaf links tool_frame, finger_left,
                                 finger_right)
  meshes/*.stl, *.obj, *.mtl

The script also reads the written URDF back (xml.etree) and prints the joints
in Cerebellum's depth-first order, the leaf links, and the tool_frame pose at
a few joint vectors from its own forward kinematics (URDF rpy = fixed-axis
roll, pitch, yaw: R = Rz(yaw) Ry(pitch) Rx(roll)), for the Rust tests.

Regenerate (pure Python 3.11 standard library; output is deterministic):

    python3 tests/reference/make_test_arm.py
"""

from __future__ import annotations

import math
import struct
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "test_arm7"
OUT = REPO / "sim" / "tests" / "fixtures" / "arms" / PACKAGE
MAX_BYTES = 500 * 1024

HALF_PI = math.pi / 2

# ---------------------------------------------------------------------------
# Closed convex shells: (vertices, polygons), polygons counter-clockwise seen
# from outside, so the right-hand normal points out.


def prism(n, r, z0, z1, axis="z", centre=(0.0, 0.0, 0.0)):
    """A regular n-gon prism (a faceted cylinder) along `axis`, from z0 to z1
    along it, around `centre`."""
    ring = [(r * math.cos(2 * math.pi * i / n), r * math.sin(2 * math.pi * i / n)) for i in range(n)]
    verts = [(x, y, z0) for x, y in ring] + [(x, y, z1) for x, y in ring]
    polys = [(i, (i + 1) % n, n + (i + 1) % n, n + i) for i in range(n)]
    polys.append(tuple(n + i for i in range(n)))  # top, normal +axis
    polys.append(tuple(reversed(range(n))))  # bottom, normal -axis
    if axis == "y":  # rotate -90° about x: (x, y, z) -> (x, z, -y), z-axis -> +y
        verts = [(x, z, -y) for x, y, z in verts]
    elif axis != "z":
        raise ValueError(axis)
    cx, cy, cz = centre
    return [(x + cx, y + cy, z + cz) for x, y, z in verts], polys


def hexahedron(v):
    """Eight corners indexed x + 2y + 4z (bit = which side), e.g. a box."""
    polys = [(0, 2, 3, 1), (4, 5, 7, 6), (0, 1, 5, 4), (2, 6, 7, 3), (0, 4, 6, 2), (1, 3, 7, 5)]
    return list(v), polys


def box(lo, hi):
    return hexahedron(
        [(hi[0] if i & 1 else lo[0], hi[1] if i & 2 else lo[1], hi[2] if i & 4 else lo[2]) for i in range(8)]
    )


def triangles(shell):
    """Fan-triangulates the (convex) polygons of a shell."""
    verts, polys = shell
    return [(verts[p[0]], verts[p[k]], verts[p[k + 1]]) for p in polys for k in range(1, len(p) - 1)]


def sub(a, b):
    return (a[0] - b[0], a[1] - b[1], a[2] - b[2])


def cross(a, b):
    return (a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0])


def dot(a, b):
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def unit(a):
    n = math.sqrt(dot(a, a))
    return (a[0] / n, a[1] / n, a[2] / n)


def normal(tri):
    return unit(cross(sub(tri[1], tri[0]), sub(tri[2], tri[0])))


def check_shell(shell, what):
    """Closed (every edge used once each way), positive volume, and every
    face normal pointing away from the centroid (the shells are convex)."""
    verts, polys = shell
    edges = {}
    for p in polys:
        for k in range(len(p)):
            e = (p[k], p[(k + 1) % len(p)])
            edges[e] = edges.get(e, 0) + 1
    for (a, b), count in edges.items():
        if count != 1 or edges.get((b, a)) != 1:
            raise AssertionError(f"{what}: edge {a}-{b} is not shared by exactly two faces")
    tris = triangles(shell)
    volume = sum(dot(t[0], cross(t[1], t[2])) for t in tris) / 6
    if volume <= 0:
        raise AssertionError(f"{what}: volume {volume} (faces turned inwards)")
    c = tuple(sum(v[k] for v in verts) / len(verts) for k in range(3))
    for t in tris:
        centre = tuple(sum(v[k] for v in t) / 3 for k in range(3))
        if dot(normal(t), sub(centre, c)) <= 0:
            raise AssertionError(f"{what}: a face normal points inwards")


def scaled(shell, s):
    verts, polys = shell
    return [(x * s, y * s, z * s) for x, y, z in verts], polys


# ---------------------------------------------------------------------------
# Mesh writers.


def write_stl_binary(path, shells, name):
    tris = [t for s in shells for t in triangles(s)]
    header = f"binary STL {name}, generated by make_test_arm.py".encode().ljust(80, b" ")
    assert not header.startswith(b"solid")
    out = bytearray(header + struct.pack("<I", len(tris)))
    for t in tris:
        out += struct.pack("<12fH", *normal(t), *t[0], *t[1], *t[2], 0)
    path.write_bytes(bytes(out))


def write_stl_ascii(path, shells, name):
    lines = [f"solid {name}"]
    for t in (t for s in shells for t in triangles(s)):
        lines.append("  facet normal {:.6e} {:.6e} {:.6e}".format(*normal(t)))
        lines.append("    outer loop")
        for v in t:
            lines.append("      vertex {:.6e} {:.6e} {:.6e}".format(*v))
        lines.append("    endloop")
        lines.append("  endfacet")
    lines.append(f"endsolid {name}")
    path.write_text("\n".join(lines) + "\n")


def write_obj(path, groups, polygons=False, mtllib=None):
    """groups: [(group name, material or None, [shells])]. Triangles unless
    `polygons`, in which case quads and n-gons are written as they are."""
    lines = ["# generated by tests/reference/make_test_arm.py"]
    if mtllib:
        lines.append(f"mtllib {mtllib}")
    lines.append(f"o {path.stem}")
    base_v = 1
    base_n = 1
    for gname, material, shells in groups:
        lines.append(f"g {gname}")
        if material:
            lines.append(f"usemtl {material}")
        for verts, polys in shells:
            for v in verts:
                lines.append("v {:.6f} {:.6f} {:.6f}".format(*v))
            faces = (
                [list(p) for p in polys]
                if polygons
                else [[p[0], p[k], p[k + 1]] for p in polys for k in range(1, len(p) - 1)]
            )
            for f in faces:
                lines.append("vn {:.6f} {:.6f} {:.6f}".format(*normal([verts[i] for i in f[:3]])))
            for j, f in enumerate(faces):
                lines.append("f " + " ".join(f"{base_v + i}//{base_n + j}" for i in f))
            base_v += len(verts)
            base_n += len(faces)
    path.write_text("\n".join(lines) + "\n")


# ---------------------------------------------------------------------------
# The meshes, in each link's frame (metres unless said otherwise).

MESHES = {
    # base of joint1 upward: a 24-gon drum, written in millimetres.
    "link1.stl": ("stl-binary", [prism(24, 0.075, 0.0, 0.16)], 1000.0),
    # joint2 housing (along y) and the tube up to joint3.
    "link2.stl": ("stl-ascii", [prism(16, 0.07, -0.075, 0.075, axis="y"), prism(16, 0.06, 0.0, 0.18)], 1.0),
    # tube up to the elbow and the joint4 housing 5 cm forward.
    "link3.obj": (
        "obj",
        [
            ("tube", None, [prism(20, 0.065, 0.0, 0.14)]),
            ("elbow", None, [prism(20, 0.065, -0.07, 0.07, axis="y", centre=(0.05, 0.0, 0.18))]),
        ],
        False,
    ),
    # forearm tube and joint6 housing, written with quads and n-gon caps.
    "link5.obj": (
        "obj",
        [
            ("forearm", None, [prism(20, 0.055, 0.0, 0.12)]),
            ("wrist", None, [prism(20, 0.055, -0.06, 0.06, axis="y", centre=(0.0, 0.0, 0.17))]),
        ],
        True,
    ),
    # the last wrist disc.
    "link7.stl": ("stl-binary", [prism(24, 0.045, 0.0, 0.045)], 1.0),
    # the palm, with a .mtl beside it.
    "hand.obj": ("obj-mtl", [("palm", "hand_black", [box((-0.03, -0.08, 0.0), (0.03, 0.08, 0.06))])], False),
    # a tapered finger on the +y side of its frame: 2 cm thick at the root,
    # 1 cm at the tip, inner face at y = 0. The right finger uses it turned
    # 180° about z.
    "finger.stl": (
        "stl-binary",
        [
            hexahedron(
                [
                    (-0.01, 0.0, 0.0), (0.01, 0.0, 0.0), (-0.01, 0.02, 0.0), (0.01, 0.02, 0.0),
                    (-0.01, 0.0, 0.05), (0.01, 0.0, 0.05), (-0.01, 0.01, 0.05), (0.01, 0.01, 0.05),
                ]
            )
        ],
        1.0,
    ),
}

HAND_MTL = """# generated by tests/reference/make_test_arm.py
newmtl hand_black
Ka 0.000000 0.000000 0.000000
Kd 0.100000 0.100000 0.100000
Ks 0.300000 0.300000 0.300000
Ns 50.000000
d 1.000000
illum 2
"""


def write_meshes(folder):
    folder.mkdir(parents=True, exist_ok=True)
    for name, (kind, content, extra) in MESHES.items():
        path = folder / name
        if kind.startswith("obj"):
            for gname, _, shells in content:
                for i, s in enumerate(shells):
                    check_shell(s, f"{name}/{gname}#{i}")
            mtl = None
            if kind == "obj-mtl":
                mtl = path.with_suffix(".mtl").name
                (folder / mtl).write_text(HAND_MTL)
            write_obj(path, content, polygons=extra, mtllib=mtl)
        else:
            for i, s in enumerate(content):
                check_shell(s, f"{name}#{i}")
            shells = [scaled(s, extra) for s in content]
            if kind == "stl-binary":
                write_stl_binary(path, shells, Path(name).stem)
            else:
                write_stl_ascii(path, shells, Path(name).stem)


# ---------------------------------------------------------------------------
# Inertia of solids about their centre of mass.


def cylinder_inertia(m, r, h, axis="z"):
    across = m * (3 * r * r + h * h) / 12
    along = m * r * r / 2
    return {"z": (across, across, along), "y": (across, along, across), "x": (along, across, across)}[axis]


def box_inertia(m, size):
    x, y, z = size
    return (m * (y * y + z * z) / 12, m * (x * x + z * z) / 12, m * (x * x + y * y) / 12)


# ---------------------------------------------------------------------------
# The URDF.


def num(x):
    """Fixed-point decimal without trailing zeros (no exponent notation)."""
    if abs(x) < 5e-13:
        return "0"
    s = f"{x:.12f}".rstrip("0").rstrip(".")
    return s


def vec(v):
    return " ".join(num(x) for x in v)


PI_RPY = {HALF_PI: "1.5707963267948966", -math.pi / 4: "-0.7853981633974483", math.pi: "3.141592653589793"}


def rpy_text(rpy):
    return " ".join(PI_RPY.get(a, num(a)) for a in rpy)


def origin(xyz=(0, 0, 0), rpy=(0, 0, 0)):
    return f'<origin xyz="{vec(xyz)}" rpy="{rpy_text(rpy)}"/>'


MATERIALS = {
    "kuka_orange": (1.0, 0.42, 0.0, 1.0),
    "light_grey": (0.78, 0.78, 0.8, 1.0),
    "dark_grey": (0.25, 0.25, 0.27, 1.0),
}

# Geometry helpers: each returns the inner XML of <geometry>.
def cyl(r, length):
    return f'<cylinder radius="{num(r)}" length="{num(length)}"/>'


def boxg(size):
    return f'<box size="{vec(size)}"/>'


def mesh(uri, scale=None):
    s = f' scale="{vec(scale)}"' if scale else ""
    return f'<mesh filename="{uri}"{s}/>'


def pkg(name):
    return f"package://{PACKAGE}/meshes/{name}"


def rel(name):
    return f"../meshes/{name}"


# Material references: a name alone refers to a top-level <material>; a tuple
# is an inline colour.
MM = (0.001, 0.001, 0.001)

LINKS = [
    # name, mass, com, inertia (ixx, iyy, izz), visuals, collisions;
    # each visual/collision: (origin xyz, rpy, geometry[, material]).
    dict(
        name="base_link",
        mass=5.0,
        com=(0, 0, 0.06),
        inertia=cylinder_inertia(5.0, 0.09, 0.12),
        visual=[
            ((0, 0, 0.06), (0, 0, 0), cyl(0.09, 0.12), "dark_grey"),
            ((0, 0, 0.01), (0, 0, 0), boxg((0.24, 0.24, 0.02)), "dark_grey"),
        ],
        collision=[
            ((0, 0, 0.06), (0, 0, 0), cyl(0.09, 0.12)),
            ((0, 0, 0.01), (0, 0, 0), boxg((0.24, 0.24, 0.02))),
        ],
    ),
    dict(
        name="link1",
        mass=4.0,
        com=(0, 0, 0.08),
        inertia=cylinder_inertia(4.0, 0.075, 0.16),
        visual=[((0, 0, 0), (0, 0, 0), mesh(rel("link1.stl"), MM), "kuka_orange")],
        collision=[((0, 0, 0), (0, 0, 0), mesh(rel("link1.stl"), MM))],
    ),
    dict(
        name="link2",
        mass=4.0,
        com=(0, 0, 0.07),
        inertia=cylinder_inertia(4.0, 0.065, 0.22),
        visual=[((0, 0, 0), (0, 0, 0), mesh(rel("link2.stl")), "light_grey")],
        collision=[
            ((0, 0, 0), (HALF_PI, 0, 0), cyl(0.07, 0.15)),
            ((0, 0, 0.09), (0, 0, 0), cyl(0.06, 0.18)),
        ],
    ),
    dict(
        name="link3",
        mass=3.0,
        com=(0.01, 0, 0.1),
        inertia=cylinder_inertia(3.0, 0.065, 0.2),
        visual=[((0, 0, 0), (0, 0, 0), mesh(pkg("link3.obj")), "kuka_orange")],
        collision=[((0, 0, 0), (0, 0, 0), mesh(pkg("link3.obj")))],
    ),
    dict(
        name="link4",
        mass=2.7,
        com=(-0.03, 0, 0.07),
        inertia=box_inertia(2.7, (0.1, 0.11, 0.2)),
        visual=[
            ((0, 0, 0), (HALF_PI, 0, 0), cyl(0.06, 0.13), "light_grey"),
            ((-0.05, 0, 0.095), (0, 0, 0), boxg((0.1, 0.11, 0.15)), "light_grey"),
        ],
        collision=[
            ((0, 0, 0), (HALF_PI, 0, 0), cyl(0.06, 0.13)),
            ((-0.05, 0, 0.095), (0, 0, 0), boxg((0.1, 0.11, 0.15))),
        ],
    ),
    dict(
        name="link5",
        mass=1.7,
        com=(0, 0, 0.08),
        inertia=cylinder_inertia(1.7, 0.055, 0.17),
        visual=[((0, 0, 0), (0, 0, 0), mesh(pkg("link5.obj")), "kuka_orange")],
        collision=[((0, 0, 0), (0, 0, 0), mesh(pkg("link5.obj")))],
    ),
    dict(
        name="link6",
        mass=1.6,
        com=(0, 0, 0.01),
        inertia=cylinder_inertia(1.6, 0.055, 0.12, axis="y"),
        visual=[
            ((0, 0, 0), (HALF_PI, 0, 0), cyl(0.055, 0.12), "light_grey"),
            ((0, 0, 0.035), (0, 0, 0), cyl(0.05, 0.07), "light_grey"),
        ],
        collision=[
            ((0, 0, 0), (HALF_PI, 0, 0), cyl(0.055, 0.12)),
            ((0, 0, 0.035), (0, 0, 0), cyl(0.05, 0.07)),
        ],
    ),
    dict(
        name="link7",
        mass=0.5,
        com=(0, 0, 0.0225),
        inertia=cylinder_inertia(0.5, 0.045, 0.045),
        visual=[((0, 0, 0), (0, 0, 0), mesh(rel("link7.stl")), (0.55, 0.57, 0.6, 1.0))],
        collision=[((0, 0, 0.0225), (0, 0, 0), cyl(0.045, 0.045))],
    ),
    dict(name="flange"),  # massless frame on a fixed joint, between link7 and the hand
    dict(
        name="hand",
        mass=0.73,
        com=(0, 0, 0.03),
        inertia=box_inertia(0.73, (0.06, 0.16, 0.06)),
        visual=[((0, 0, 0), (0, 0, 0), mesh(pkg("hand.obj")), (0.1, 0.1, 0.1, 1.0))],
        collision=[((0, 0, 0.03), (0, 0, 0), boxg((0.06, 0.16, 0.06)))],
    ),
    dict(
        name="finger_left",
        mass=0.05,
        com=(0, 0.0075, 0.025),
        inertia=box_inertia(0.05, (0.02, 0.015, 0.05)),
        visual=[((0, 0, 0), (0, 0, 0), mesh(rel("finger.stl")), (0.85, 0.85, 0.87, 1.0))],
        collision=[((0, 0, 0), (0, 0, 0), mesh(rel("finger.stl")))],
    ),
    dict(
        name="finger_right",
        mass=0.05,
        com=(0, -0.0075, 0.025),
        inertia=box_inertia(0.05, (0.02, 0.015, 0.05)),
        # The same STL as the left finger, by its package URI, turned 180° about z.
        visual=[((0, 0, 0), (0, 0, math.pi), mesh(pkg("finger.stl")), (0.85, 0.85, 0.87, 1.0))],
        collision=[((0, 0, 0), (0, 0, math.pi), mesh(pkg("finger.stl")))],
    ),
    dict(name="tool_frame"),  # the end effector: between the fingertips, no inertial
]

Z = (0, 0, 1)
Y = (0, 1, 0)

# name, type, parent, child, origin xyz, origin rpy, axis, limit (lower, upper,
# effort, velocity) or None, extras.
JOINTS = [
    ("joint1", "revolute", "base_link", "link1", (0, 0, 0.12), (0, 0, 0), Z, (-2.9, 2.9, 300, 1.5), {}),
    ("joint2", "revolute", "link1", "link2", (0, 0, 0.16), (0, 0, 0), Y, (-2.0, 2.0, 300, 1.5), {}),
    ("joint3", "revolute", "link2", "link3", (0, 0, 0.18), (0, 0, 0), Z, (-2.9, 2.9, 150, 1.75), {}),
    ("joint4", "revolute", "link3", "link4", (0.05, 0, 0.18), (0, 0, 0), Y, (-2.0, 2.0, 150, 2.2), {}),
    ("joint5", "revolute", "link4", "link5", (-0.05, 0, 0.17), (0, 0, 0), Z, (-2.9, 2.9, 40, 2.6), {}),
    ("joint6", "revolute", "link5", "link6", (0, 0, 0.17), (0, 0, 0), Y, (-2.0, 2.0, 12, 3.1), {}),
    ("joint7", "revolute", "link6", "link7", (0, 0, 0.07), (0, 0, 0), Z, (-2.9, 2.9, 12, 3.1), {}),
    ("flange_joint", "fixed", "link7", "flange", (0, 0, 0.045), (0, 0, 0), None, None, {}),
    ("hand_joint", "fixed", "flange", "hand", (0, 0, 0), (0, 0, -math.pi / 4), None, None, {}),
    ("finger_left_joint", "prismatic", "hand", "finger_left", (0, 0, 0.06), (0, 0, 0), Y, (0.0, 0.04, 20, 0.2), {}),
    (
        "finger_right_joint",
        "prismatic",
        "hand",
        "finger_right",
        (0, 0, 0.06),
        (0, 0, 0),
        (0, -1, 0),
        (0.0, 0.04, 20, 0.2),
        {"mimic": "finger_left_joint"},
    ),
    ("tool_joint", "fixed", "hand", "tool_frame", (0, 0, 0.105), (0, 0, 0), None, None, {}),
]


def urdf_text():
    o = ['<?xml version="1.0" encoding="utf-8"?>']
    o.append("<!-- test_arm7: Cerebellum's second test arm. Generated by tests/reference/make_test_arm.py;")
    o.append("     edit the script, not this file. -->")
    o.append(f'<robot name="{PACKAGE}">')
    o.append("")
    for name, rgba in MATERIALS.items():
        o.append(f'  <material name="{name}">')
        o.append(f'    <color rgba="{vec(rgba)}"/>')
        o.append("  </material>")
    for link in LINKS:
        o.append("")
        if "mass" not in link:
            o.append(f'  <link name="{link["name"]}"/>')
            continue
        o.append(f'  <link name="{link["name"]}">')
        ixx, iyy, izz = link["inertia"]
        assert ixx + iyy >= izz and iyy + izz >= ixx and izz + ixx >= iyy, link["name"]
        o.append("    <inertial>")
        o.append(f"      {origin(link['com'])}")
        o.append(f'      <mass value="{num(link["mass"])}"/>')
        o.append(
            f'      <inertia ixx="{num(ixx)}" ixy="0" ixz="0" iyy="{num(iyy)}" iyz="0" izz="{num(izz)}"/>'
        )
        o.append("    </inertial>")
        for xyz, rpy, geometry, material in link["visual"]:
            o.append("    <visual>")
            o.append(f"      {origin(xyz, rpy)}")
            o.append(f"      <geometry>{geometry}</geometry>")
            if isinstance(material, str):
                o.append(f'      <material name="{material}"/>')
            else:
                o.append(f'      <material name="{link["name"]}_colour">')
                o.append(f'        <color rgba="{vec(material)}"/>')
                o.append("      </material>")
            o.append("    </visual>")
        for xyz, rpy, geometry in link["collision"]:
            o.append("    <collision>")
            o.append(f"      {origin(xyz, rpy)}")
            o.append(f"      <geometry>{geometry}</geometry>")
            o.append("    </collision>")
        o.append("  </link>")
    for name, jtype, parent, child, xyz, rpy, axis, limit, extra in JOINTS:
        o.append("")
        o.append(f'  <joint name="{name}" type="{jtype}">')
        o.append(f"    {origin(xyz, rpy)}")
        o.append(f'    <parent link="{parent}"/>')
        o.append(f'    <child link="{child}"/>')
        if axis:
            o.append(f'    <axis xyz="{vec(axis)}"/>')
        if limit:
            lo, hi, effort, velocity = limit
            o.append(
                f'    <limit lower="{num(lo)}" upper="{num(hi)}" effort="{num(effort)}" velocity="{num(velocity)}"/>'
            )
        if jtype == "revolute":
            o.append(f'    <dynamics damping="{num(0.002 * limit[2])}" friction="0.0"/>')
        if name == "joint1":
            o.append(
                '    <safety_controller soft_lower_limit="-2.85" soft_upper_limit="2.85"'
                ' k_position="100" k_velocity="2"/>'
            )
        if "mimic" in extra:
            o.append(f'    <mimic joint="{extra["mimic"]}" multiplier="1" offset="0"/>')
        o.append("  </joint>")
    o.append("")
    o.append("  <!-- Elements Cerebellum does not use, as real URDFs carry them. -->")
    o.append('  <transmission name="joint1_transmission">')
    o.append("    <type>transmission_interface/SimpleTransmission</type>")
    o.append('    <joint name="joint1">')
    o.append("      <hardwareInterface>hardware_interface/EffortJointInterface</hardwareInterface>")
    o.append("    </joint>")
    o.append('    <actuator name="joint1_motor">')
    o.append("      <mechanicalReduction>160</mechanicalReduction>")
    o.append("    </actuator>")
    o.append("  </transmission>")
    o.append('  <gazebo reference="link1">')
    o.append("    <material>Gazebo/Orange</material>")
    o.append("  </gazebo>")
    o.append("</robot>")
    return "\n".join(o) + "\n"


# Joint positions of the start pose: elbow bent, tool pointing straight down
# 0.19 m above the ground in front of the base (joint6 = pi - joint2 - joint4).
HOME = {"joint2": 0.5, "joint4": 1.7, "joint6": 0.9416}


def config_text():
    lines = [
        "# Cerebellum's settings for test_arm7 (test_arm7.urdf), a test fixture.",
        "# Generated by tests/reference/make_test_arm.py; edit the script, not this file.",
        "#",
        "# Deliberately no [default_actuator] or [actuators]: this arm runs on the",
        "# servo defaults derived from the URDF effort limits.",
        "",
        "# Three leaf links (tool_frame, finger_left, finger_right): the tool frame",
        "# between the fingertips is the end effector.",
        'ee_link = "tool_frame"',
        "",
        "# Start pose: elbow bent, tool pointing straight down 0.19 m above the",
        "# ground in front of the base. Joints not named start at 0.",
        "[home]",
    ]
    lines += [f"{k} = {v}" for k, v in HOME.items()]
    lines += [
        "",
        "[gripper]",
        'joint = "finger_left_joint"',
        "open = 0.04",
        "closed = 0.0",
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------
# Reading the written URDF back: Cerebellum's joint order and forward
# kinematics, independently of the tables above.


def mat_mul(a, b):
    return [[sum(a[i][k] * b[k][j] for k in range(4)) for j in range(4)] for i in range(4)]


def rot_rpy(r, p, y):
    cr, sr, cp, sp, cy, sy = math.cos(r), math.sin(r), math.cos(p), math.sin(p), math.cos(y), math.sin(y)
    # Rz(y) @ Ry(p) @ Rx(r)
    return [
        [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
        [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
        [-sp, cp * sr, cp * cr],
    ]


def transform(rot, t):
    return [rot[0] + [t[0]], rot[1] + [t[1]], rot[2] + [t[2]], [0.0, 0.0, 0.0, 1.0]]


def axis_angle(axis, a):
    x, y, z = unit(axis)
    c, s, C = math.cos(a), math.sin(a), 1 - math.cos(a)
    return [
        [c + x * x * C, x * y * C - z * s, x * z * C + y * s],
        [y * x * C + z * s, c + y * y * C, y * z * C - x * s],
        [z * x * C - y * s, z * y * C + x * s, c + z * z * C],
    ]


def floats(text, default):
    return tuple(float(v) for v in text.split()) if text is not None else default


class Urdf:
    def __init__(self, path):
        root = ET.parse(path).getroot()
        self.links = [l.get("name") for l in root.findall("link")]
        self.joints = {}
        self.parent_joint = {}
        self.children = {}
        self.doc_order = []
        for j in root.findall("joint"):
            o = j.find("origin")
            a = j.find("axis")
            m = j.find("mimic")
            lim = j.find("limit")
            info = dict(
                name=j.get("name"),
                type=j.get("type"),
                parent=j.find("parent").get("link"),
                child=j.find("child").get("link"),
                xyz=floats(o.get("xyz") if o is not None else None, (0.0, 0.0, 0.0)),
                rpy=floats(o.get("rpy") if o is not None else None, (0.0, 0.0, 0.0)),
                axis=floats(a.get("xyz") if a is not None else None, (1.0, 0.0, 0.0)),
                mimic=None if m is None else (m.get("joint"), float(m.get("multiplier", 1)), float(m.get("offset", 0))),
                effort=float(lim.get("effort")) if lim is not None else 0.0,
            )
            self.joints[info["name"]] = info
            self.doc_order.append(info["name"])
            assert info["child"] not in self.parent_joint
            self.parent_joint[info["child"]] = info["name"]
            self.children.setdefault(info["parent"], []).append(info["name"])
        roots = [l for l in self.links if l not in self.parent_joint]
        assert len(roots) == 1, roots
        self.root = roots[0]

    def depth_first(self):
        """All joints in the order of arm_model.rs's `actuated_joints`."""
        order, stack = [], [self.root]
        while stack:
            link = stack.pop()
            kids = self.children.get(link, [])
            for j in reversed(kids):
                stack.append(self.joints[j]["child"])
            order.extend(kids)
        return order

    def actuated(self):
        return [
            j for j in self.depth_first()
            if self.joints[j]["type"] in ("revolute", "continuous", "prismatic") and not self.joints[j]["mimic"]
        ]

    def leaves(self):
        return [l for l in self.links if l not in self.children]

    def pose(self, link, q):
        """World pose (4x4) of `link` for actuated joint values `q` (dict)."""
        chain = []
        while link in self.parent_joint:
            j = self.joints[self.parent_joint[link]]
            chain.append(j)
            link = j["parent"]
        t = transform(rot_rpy(0, 0, 0), (0, 0, 0))
        for j in reversed(chain):
            t = mat_mul(t, transform(rot_rpy(*j["rpy"]), j["xyz"]))
            if j["mimic"]:
                leader, mult, off = j["mimic"]
                v = mult * q.get(leader, 0.0) + off
            else:
                v = q.get(j["name"], 0.0)
            if j["type"] in ("revolute", "continuous"):
                t = mat_mul(t, transform(axis_angle(j["axis"], v), (0, 0, 0)))
            elif j["type"] == "prismatic":
                d = unit(j["axis"])
                t = mat_mul(t, transform(rot_rpy(0, 0, 0), (d[0] * v, d[1] * v, d[2] * v)))
        return t


def fmt3(v):
    return "[" + ", ".join(f"{x:.6f}" for x in v) + "]"


def main():
    urdf_dir = OUT / "urdf"
    urdf_dir.mkdir(parents=True, exist_ok=True)
    write_meshes(OUT / "meshes")
    text = urdf_text()
    (urdf_dir / f"{PACKAGE}.urdf").write_text(text)
    (urdf_dir / f"{PACKAGE}_no_config.urdf").write_text(text)
    (urdf_dir / f"{PACKAGE}.toml").write_text(config_text())

    # Every mesh the URDF names must exist, as Cerebellum resolves it.
    for element in ET.parse(urdf_dir / f"{PACKAGE}.urdf").getroot().iter("mesh"):
        uri = element.get("filename")
        if uri.startswith("package://"):
            package, rest = uri[len("package://"):].split("/", 1)
            assert package == PACKAGE, uri
            path = OUT / rest
        else:
            path = (urdf_dir / uri).resolve()
        assert path.is_file(), f"{uri} -> {path} missing"
    # The binary STLs read back with the triangle count they declare.
    for stl in sorted((OUT / "meshes").glob("*.stl")):
        data = stl.read_bytes()
        if not data.startswith(b"solid"):
            (count,) = struct.unpack_from("<I", data, 80)
            assert len(data) == 84 + 50 * count, stl

    files = sorted(p for p in OUT.rglob("*") if p.is_file())
    total = sum(p.stat().st_size for p in files)
    print(f"wrote {OUT.relative_to(REPO)}/ ({total} bytes):")
    for p in files:
        print(f"  {str(p.relative_to(OUT)):32} {p.stat().st_size:7d} bytes")
    if total > MAX_BYTES:
        sys.exit(f"the fixture is {total} bytes, over {MAX_BYTES}")

    for name in (f"{PACKAGE}.urdf", f"{PACKAGE}_no_config.urdf"):
        ET.parse(urdf_dir / name)  # raises on malformed XML
    robot = Urdf(urdf_dir / f"{PACKAGE}.urdf")
    print("joints, depth first:", ", ".join(robot.depth_first()))
    print("actuated joints (mimic excluded):", ", ".join(robot.actuated()))
    print("leaf links:", ", ".join(robot.leaves()))
    print("effort limits:", ", ".join(f"{j}={robot.joints[j]['effort']:g}" for j in robot.actuated()))

    def report(label, q):
        t = robot.pose("tool_frame", q)
        p = [t[i][3] for i in range(3)]
        z = [t[i][2] for i in range(3)]
        print(f"tool_frame at {label}: position {fmt3(p)}, z axis {fmt3(z)}")
        return p

    p0 = report("all-zero joints", {})
    # By hand: every arm joint origin stacks along +z at zero (the elbow
    # offsets +0.05 and -0.05 cancel); the hand's -45° yaw moves nothing on
    # its z axis.
    by_hand = (0.05 - 0.05, 0.0, 0.12 + 0.16 + 0.18 + 0.18 + 0.17 + 0.17 + 0.07 + 0.045 + 0.0 + 0.105)
    print(
        "  by hand: x = 0.05 - 0.05 = 0, y = 0, z = 0.12 + 0.16 + 0.18 + 0.18 + 0.17 + 0.17"
        f" + 0.07 + 0.045 + 0.105 = {by_hand[2]:.3f}"
    )
    assert all(abs(a - b) < 1e-12 for a, b in zip(p0, by_hand)), (p0, by_hand)
    report("home " + str(HOME), HOME)
    test_q = dict(zip(robot.actuated(), [0.3, -0.5, 0.4, 1.2, -0.7, 0.9, 0.5, 0.02]))
    report("q = " + str(list(test_q.values())), test_q)
    for side in ("finger_left", "finger_right"):
        t = robot.pose(side, {"finger_left_joint": 0.04})
        print(f"{side} at open (0.04), zero arm: {fmt3([t[i][3] for i in range(3)])}")


if __name__ == "__main__":
    main()
