use cerebellum_core::Image;
use cerebellum_sim::camera::{Camera, CameraConfig, save_png};
use cerebellum_sim::*;
use std::path::Path;
use std::sync::Arc;

fn so101() -> Arc<ArmModel> {
    ArmModel::load(&so101_urdf(), &ArmOptions::default()).expect("SO-101 loads")
}

fn world_with_cube(model: &Arc<ArmModel>, cube_xy: [f32; 2]) -> ArmWorld {
    ArmWorld::new(
        model.clone(),
        &PhysicsConfig::default(),
        &[0.0; 6],
        Some((CubeConfig::default(), cube_xy, 0.0)),
    )
}

fn pixels(image: &Image) -> impl Iterator<Item = [u8; 3]> + '_ {
    image.data.chunks_exact(3).map(|p| [p[0], p[1], p[2]])
}

/// The 3D-printed parts: URDF colour (1, 0.82, 0.12), shaded.
fn is_yellow([r, g, b]: [u8; 3]) -> bool {
    let (r, g, b) = (r as f32, g as f32, b as f32);
    r > 60.0 && (g / r - 0.82).abs() < 0.05 && b / r < 0.2
}

/// The motors: URDF colour (0.1, 0.1, 0.1), shaded.
fn is_dark_grey([r, g, b]: [u8; 3]) -> bool {
    r < 40 && r == g && g == b
}

fn is_red([r, g, b]: [u8; 3]) -> bool {
    r > 60 && (g as f32) < 0.2 * r as f32 && (b as f32) < 0.2 * r as f32
}

fn is_sky([r, _, b]: [u8; 3]) -> bool {
    b > 200 && b as u32 > r as u32 + 20
}

/// Warm grey-brown checker squares.
fn is_table([r, g, b]: [u8; 3]) -> bool {
    let (r, g, b) = (r as f32, g as f32, b as f32);
    r > 50.0 && (g / r - 0.935).abs() < 0.03 && (b / r - 0.835).abs() < 0.03
}

fn count(image: &Image, test: fn([u8; 3]) -> bool) -> usize {
    pixels(image).filter(|&p| test(p)).count()
}

#[test]
fn camera_default_view_shows_arm_table_and_sky() {
    let model = so101();
    let world = world_with_cube(&model, [0.2, 0.1]);
    let camera = Camera::new(CameraConfig::default()).unwrap();
    let image = camera.render(&world);
    assert_eq!(image.camera, "front");
    assert_eq!((image.height, image.width, image.channels), (64, 64, 3));
    assert_eq!(image.data.len(), 64 * 64 * 3);

    let total = 64 * 64;
    let yellow = count(&image, is_yellow);
    let dark = count(&image, is_dark_grey);
    let table = count(&image, is_table);
    let sky = count(&image, is_sky);
    let red = count(&image, is_red);
    println!("yellow {yellow} motors {dark} table {table} sky {sky} cube {red} of {total}");
    assert!(yellow > total / 50, "too few arm pixels: {yellow}");
    assert!(dark > 10, "too few motor pixels: {dark}");
    assert!(table > total / 4, "too few table pixels: {table}");
    assert!(sky > total / 50, "too few sky pixels: {sky}");
    assert!(red > 4, "too few cube pixels: {red}");

    let dir = std::env::temp_dir();
    save_png(&image, &dir.join("camera_default.png")).unwrap();
    let big = Camera::new(CameraConfig {
        width: 128,
        height: 128,
        ..CameraConfig::default()
    })
    .unwrap();
    let big_image = big.render(&world);
    assert_eq!(big_image.data.len(), 128 * 128 * 3);
    save_png(&big_image, &dir.join("camera_default_128.png")).unwrap();
}

#[test]
fn camera_non_square_image_has_the_configured_size() {
    let world = world_with_cube(&so101(), [0.2, 0.1]);
    let camera = Camera::new(CameraConfig {
        name: "wide".into(),
        width: 96,
        height: 48,
        ..CameraConfig::default()
    })
    .unwrap();
    let image = camera.render(&world);
    assert_eq!(image.camera, "wide");
    assert_eq!((image.height, image.width, image.channels), (48, 96, 3));
    assert_eq!(image.data.len(), 48 * 96 * 3);
    assert!(count(&image, is_yellow) > 0);
}

#[test]
fn camera_is_deterministic_and_sees_the_arm_move() {
    let model = so101();
    let camera = Camera::new(CameraConfig::default()).unwrap();
    let mut world = world_with_cube(&model, [0.2, 0.1]);
    let first = camera.render(&world);
    assert_eq!(first, camera.render(&world), "same world, same bytes");
    let other_world = world_with_cube(&model, [0.2, 0.1]);
    assert_eq!(
        first,
        camera.render(&other_world),
        "equal worlds, same bytes"
    );
    let cloned = world.clone();
    assert_eq!(first, camera.render(&cloned));

    world.set_joint_positions(&[0.8, -0.6, 0.7, 0.5, 0.3, 0.4]);
    let moved = camera.render(&world);
    let changed = first
        .data
        .chunks_exact(3)
        .zip(moved.data.chunks_exact(3))
        .filter(|(a, b)| a != b)
        .count();
    assert!(changed > 100, "only {changed} pixels changed");
    assert_eq!(moved, camera.render(&world));

    // render_into reuses a buffer and gives the same bytes.
    let mut reused = first.clone();
    camera.render_into(&world, &mut reused);
    assert_eq!(reused, moved);
}

#[test]
fn camera_sees_the_cube_only_when_it_is_in_view() {
    let model = so101();
    let camera = Camera::new(CameraConfig::default()).unwrap();
    let in_view = camera.render(&world_with_cube(&model, [0.25, -0.1]));
    let red = count(&in_view, is_red);
    assert!(red > 4, "cube in view: {red} red pixels");

    let far_away = camera.render(&world_with_cube(&model, [5.0, 0.0]));
    assert_eq!(count(&far_away, is_red), 0);
    let without = ArmWorld::new(model, &PhysicsConfig::default(), &[0.0; 6], None);
    assert_eq!(count(&camera.render(&without), is_red), 0);
}

#[test]
fn camera_rejects_invalid_configs_with_a_message() {
    let base = CameraConfig::default();
    let cases = [
        (
            CameraConfig {
                width: 0,
                ..base.clone()
            },
            "width",
        ),
        (
            CameraConfig {
                height: 0,
                ..base.clone()
            },
            "height",
        ),
        (
            CameraConfig {
                width: 100_000,
                ..base.clone()
            },
            "at most",
        ),
        (
            CameraConfig {
                fov_y_degrees: 0.5,
                ..base.clone()
            },
            "fov_y_degrees",
        ),
        (
            CameraConfig {
                fov_y_degrees: 180.0,
                ..base.clone()
            },
            "fov_y_degrees",
        ),
        (
            CameraConfig {
                fov_y_degrees: f32::NAN,
                ..base.clone()
            },
            "fov_y_degrees",
        ),
        (
            CameraConfig {
                look_at: base.eye,
                ..base.clone()
            },
            "eye and look_at",
        ),
        (
            CameraConfig {
                eye: [f32::INFINITY, 0.0, 0.0],
                ..base.clone()
            },
            "eye must be finite",
        ),
        (
            CameraConfig {
                look_at: [0.0, f32::NAN, 0.0],
                ..base.clone()
            },
            "look_at must be finite",
        ),
        (
            CameraConfig {
                eye: [0.0, 0.0, 1.0],
                look_at: [0.0, 0.0, 0.0],
                ..base.clone()
            },
            "parallel",
        ),
        (
            CameraConfig {
                up: [0.0, 0.0, 0.0],
                ..base.clone()
            },
            "up",
        ),
    ];
    for (config, needle) in cases {
        let error = Camera::new(config.clone()).expect_err(&format!("{config:?} accepted"));
        assert!(
            error.contains(needle),
            "{error:?} does not mention {needle}"
        );
        assert!(
            error.contains("front"),
            "{error:?} does not name the camera"
        );
    }
}

#[test]
fn camera_config_reads_from_toml_with_defaults_and_rejects_unknown_fields() {
    let config: CameraConfig = toml::from_str("name = \"wrist\"\nwidth = 32\n").unwrap();
    assert_eq!(config.name, "wrist");
    assert_eq!(config.width, 32);
    assert_eq!(config.height, CameraConfig::default().height);
    assert_eq!(config.up, [0.0, 0.0, 1.0]);
    assert!(toml::from_str::<CameraConfig>("widht = 32\n").is_err());
    let json = serde_json::to_string(&config).unwrap();
    assert_eq!(serde_json::from_str::<CameraConfig>(&json).unwrap(), config);
}

#[test]
fn camera_pose_jitter_moves_the_view() {
    let world = world_with_cube(&so101(), [0.2, 0.1]);
    let camera = Camera::new(CameraConfig::default()).unwrap();
    let same = camera.with_pose_jitter([0.0; 3], [0.0; 3]);
    assert_eq!(same.config(), camera.config());
    assert_eq!(same.render(&world), camera.render(&world));

    let jittered = camera.with_pose_jitter([0.02, -0.01, 0.01], [0.0, 0.0, 0.05]);
    let eye = jittered.config().eye;
    let base = camera.config().eye;
    assert!((eye[0] - base[0] - 0.02).abs() < 1e-6);
    assert_ne!(jittered.render(&world), camera.render(&world));
    // The look direction turned by 0.05 rad about z.
    let d0 = sub(camera.config().look_at, base);
    let d1 = sub(jittered.config().look_at, eye);
    let angle = (d0[0] * d1[1] - d0[1] * d1[0]).atan2(d0[0] * d1[0] + d0[1] * d1[1]);
    assert!((angle - 0.05).abs() < 1e-4, "{angle}");

    let unchanged = camera.with_pose_jitter([f32::NAN, 0.0, 0.0], [0.0; 3]);
    assert_eq!(unchanged.config(), camera.config());
}

fn sub(a: [f32; 3], b: [f32; 3]) -> [f32; 3] {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

#[test]
fn camera_save_png_reports_errors_as_values() {
    let image = Image {
        camera: "bad".into(),
        height: 2,
        width: 2,
        channels: 3,
        data: vec![0; 11],
    };
    let dir = std::env::temp_dir();
    assert!(save_png(&image, &dir.join("camera_bad.png")).is_err());
    let good = Image {
        data: vec![7; 12],
        ..image
    };
    assert!(save_png(&good, Path::new("/nonexistent-dir/x/camera.png")).is_err());
    let path = dir.join(format!("camera_roundtrip_{}.png", std::process::id()));
    save_png(&good, &path).unwrap();
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buffer = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buffer).unwrap();
    assert_eq!((info.width, info.height), (2, 2));
    assert_eq!(&buffer[..info.buffer_size()], &good.data[..]);
    let _ = std::fs::remove_file(path);
}

/// Prints render speed (200 frames, and the fastest of 10 batches of 20,
/// which is robust to a busy machine); run with `--nocapture` to see it.
#[test]
fn camera_render_speed() {
    let world = world_with_cube(&so101(), [0.2, 0.1]);
    for side in [64, 128] {
        let camera = Camera::new(CameraConfig {
            width: side,
            height: side,
            ..CameraConfig::default()
        })
        .unwrap();
        let mut image = camera.render(&world);
        let mut total = 0.0;
        let mut fastest = f64::INFINITY;
        for _ in 0..10 {
            let start = std::time::Instant::now();
            for _ in 0..20 {
                camera.render_into(&world, &mut image);
            }
            let seconds = start.elapsed().as_secs_f64();
            total += seconds;
            fastest = fastest.min(seconds / 20.0);
        }
        println!(
            "camera {side}x{side}: {:.0} frames/s over 200 frames, {:.0} frames/s in the fastest batch",
            200.0 / total,
            1.0 / fastest
        );
    }
}

fn two_cameras() -> Vec<CameraConfig> {
    vec![
        CameraConfig {
            name: "side".into(),
            width: 48,
            height: 32,
            eye: [0.2, -0.7, 0.3],
            look_at: [0.2, 0.0, 0.1],
            ..CameraConfig::default()
        },
        CameraConfig {
            name: "front".into(),
            width: 64,
            height: 64,
            ..CameraConfig::default()
        },
    ]
}

#[test]
fn env_images_come_in_the_spec_camera_order_with_their_sizes() {
    use cerebellum_core::{Action, ResetRequest, Robot};
    let config = EnvConfig {
        task: TaskKind::Lift,
        cameras: two_cameras(),
        ..EnvConfig::default()
    };
    let mut env = SimEnv::new(config, Some(so101())).unwrap();
    let spec = env.spec().clone();
    let names: Vec<_> = spec
        .observation
        .cameras
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, ["side", "front"]);
    let shapes: Vec<_> = spec
        .observation
        .cameras
        .iter()
        .map(|c| (c.height, c.width, c.channels))
        .collect();
    assert_eq!(shapes, [(32, 48, 3), (64, 64, 3)]);
    let first = env.reset(&ResetRequest { seed: 3 }).unwrap();
    spec.observation.check(&first).unwrap();
    let (lower, upper) = spec.action.limits();
    let middle: Vec<f32> = lower
        .iter()
        .zip(&upper)
        .map(|(l, u)| (l + u) / 2.0)
        .collect();
    env.apply(&Action::new(middle)).unwrap();
    let next = env.observe().unwrap();
    spec.observation.check(&next).unwrap();
    for observation in [&first, &next] {
        let got: Vec<_> = observation
            .images
            .iter()
            .map(|i| (i.camera.as_str(), i.height, i.width, i.data.len()))
            .collect();
        assert_eq!(
            got,
            [
                ("side", 32, 48, 32 * 48 * 3),
                ("front", 64, 64, 64 * 64 * 3)
            ]
        );
    }
    // Each image is its own camera's view: the single-camera render of the
    // same world (no randomisation, so no pose jitter).
    let world = env.as_arm().unwrap().world();
    for (image, config) in next.images.iter().zip(two_cameras()) {
        assert_eq!(image, &Camera::new(config).unwrap().render(world));
    }
}

#[test]
fn env_config_reads_one_camera_table_or_an_array_of_them() {
    let old: EnvConfig = toml::from_str("[camera]\nname = \"wrist\"\nwidth = 32\n").unwrap();
    assert_eq!(old.cameras.len(), 1);
    assert_eq!(
        (old.cameras[0].name.as_str(), old.cameras[0].width),
        ("wrist", 32)
    );
    let many: EnvConfig = toml::from_str(
        "[[camera]]\nname = \"a\"\nwidth = 16\n\n[[camera]]\nname = \"b\"\nheight = 8\n",
    )
    .unwrap();
    let names: Vec<_> = many.cameras.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!((many.cameras[0].width, many.cameras[1].height), (16, 8));
    let none: EnvConfig = toml::from_str("").unwrap();
    assert!(none.cameras.is_empty());
    // Written back as `[[camera]]` tables, read back equal; none is no key.
    let text = toml::to_string(&many).unwrap();
    assert!(text.contains("[[camera]]"), "{text}");
    assert_eq!(toml::from_str::<EnvConfig>(&text).unwrap(), many);
    let text = toml::to_string(&none).unwrap();
    assert!(
        !text.contains("[[camera]]") && !text.lines().any(|l| l.starts_with("camera =")),
        "{text}"
    );
    let json = serde_json::to_string(&many).unwrap();
    assert_eq!(serde_json::from_str::<EnvConfig>(&json).unwrap(), many);
    // A bad key inside either form is named.
    let error = toml::from_str::<EnvConfig>("[camera]\nwidht = 3\n").unwrap_err();
    assert!(error.to_string().contains("widht"), "{error}");
    let error = toml::from_str::<EnvConfig>("[[camera]]\nwidht = 3\n").unwrap_err();
    assert!(error.to_string().contains("widht"), "{error}");
    assert!(toml::from_str::<EnvConfig>("camera = 3\n").is_err());
}

#[test]
fn env_config_refuses_duplicate_camera_names_and_names_the_key() {
    let config: EnvConfig = toml::from_str(
        "[[camera]]\nname = \"a\"\n\n[[camera]]\nname = \"b\"\n\n[[camera]]\nname = \"a\"\n",
    )
    .unwrap();
    let error = config.validate().unwrap_err();
    assert!(
        error.contains("camera[2].name") && error.contains("\"a\"") && error.contains("camera[0]"),
        "{error}"
    );
    assert!(SimEnv::new(config, Some(so101())).is_err());
    let bad: EnvConfig =
        toml::from_str("[[camera]]\nname = \"a\"\n\n[[camera]]\nname = \"b\"\nwidth = 0\n")
            .unwrap();
    let error = bad.validate().unwrap_err();
    assert!(
        error.contains("camera[1].width") && error.contains("at least 1"),
        "{error}"
    );
    let single: EnvConfig = toml::from_str("[camera]\nwidth = 0\n").unwrap();
    assert!(single.validate().unwrap_err().contains("`camera.width`"));
    let nine = EnvConfig {
        cameras: (0..9)
            .map(|k| CameraConfig {
                name: format!("c{k}"),
                ..CameraConfig::default()
            })
            .collect(),
        ..EnvConfig::default()
    };
    let error = nine.validate().unwrap_err();
    assert!(
        error.contains("`camera`") && error.contains("at most 8"),
        "{error}"
    );
}

fn reference_views() -> Vec<(&'static str, CameraConfig)> {
    vec![
        ("front", CameraConfig::default()),
        (
            "above",
            CameraConfig {
                name: "above".into(),
                width: 64,
                height: 48,
                eye: [0.35, 0.25, 0.55],
                look_at: [0.15, -0.05, 0.05],
                ..CameraConfig::default()
            },
        ),
    ]
}

/// The old ray caster's frames of a fixed scene (lift, seed 0, the arm at
/// home; `sim/tests/fixtures/camera_raycast_*.png`, rendered by commit
/// 100457d with `cerebellum sim --task lift --seed 0 --save-frame`) against
/// the rasteriser's: the same picture up to the simplified meshes and the
/// shadow map's texels.
#[test]
fn camera_matches_the_ray_caster_reference_on_a_fixed_scene() {
    use cerebellum_core::{ResetRequest, Robot};
    for (name, config) in reference_views() {
        let mut env = SimEnv::new(
            EnvConfig {
                task: TaskKind::Lift,
                cameras: vec![config.clone()],
                ..EnvConfig::default()
            },
            Some(so101()),
        )
        .unwrap();
        env.reset(&ResetRequest { seed: 0 }).unwrap();
        let image = env.as_arm().unwrap().render();
        let reference = read_png(&format!("tests/fixtures/camera_raycast_{name}.png"));
        assert_eq!(
            (image.height, image.width),
            (reference.height, reference.width)
        );
        let pixels = (image.data.len() / 3) as f64;
        for k in 0..3 {
            let mean_abs: f64 = image
                .data
                .iter()
                .zip(&reference.data)
                .skip(k)
                .step_by(3)
                .map(|(&a, &b)| (a as f64 - b as f64).abs())
                .sum::<f64>()
                / pixels;
            println!("{name}: channel {k} mean |new − old| {mean_abs:.2}");
            assert!(mean_abs < 6.0, "{name} channel {k}: {mean_abs}");
        }
        let far_off = image
            .data
            .chunks(3)
            .zip(reference.data.chunks(3))
            .filter(|(a, b)| a.iter().zip(b.iter()).any(|(&x, &y)| x.abs_diff(y) > 24))
            .count();
        println!("{name}: {far_off} pixels off by more than 24 levels");
        assert!((far_off as f64) < 0.06 * pixels, "{name}: {far_off}");
        // Mean colour per 16×16 block.
        let (w, h) = (image.width as usize, image.height as usize);
        for by in (0..h).step_by(16) {
            for bx in (0..w).step_by(16) {
                let mean = |img: &Image, k: usize| {
                    let mut sum = 0.0;
                    for y in by..(by + 16).min(h) {
                        for x in bx..(bx + 16).min(w) {
                            sum += img.data[(y * w + x) * 3 + k] as f64;
                        }
                    }
                    sum / 256.0
                };
                for k in 0..3 {
                    let (new, old) = (mean(&image, k), mean(&reference, k));
                    assert!(
                        (new - old).abs() < 16.0,
                        "{name} block ({bx}, {by}) channel {k}: {new:.1} vs {old:.1}"
                    );
                }
            }
        }
    }
}

fn read_png(path: &str) -> Image {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buffer = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buffer).unwrap();
    buffer.truncate(info.buffer_size());
    Image {
        camera: String::new(),
        height: info.height,
        width: info.width,
        channels: 3,
        data: buffer,
    }
}

/// The pixel (column, row) where `config` sees the world point `p`.
fn project(config: &CameraConfig, p: [f32; 3]) -> (usize, usize) {
    let norm = |v: [f32; 3]| {
        let l = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
        v.map(|c| c / l)
    };
    let cross = |a: [f32; 3], b: [f32; 3]| {
        [
            a[1] * b[2] - a[2] * b[1],
            a[2] * b[0] - a[0] * b[2],
            a[0] * b[1] - a[1] * b[0],
        ]
    };
    let dot = |a: [f32; 3], b: [f32; 3]| a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
    let forward = norm(sub(config.look_at, config.eye));
    let right = norm(cross(forward, config.up));
    let up = cross(right, forward);
    let rel = sub(p, config.eye);
    let (x, y, z) = (dot(rel, right), dot(rel, up), dot(rel, forward));
    let tan = (config.fov_y_degrees.to_radians() / 2.0).tan();
    let aspect = config.width as f32 / config.height as f32;
    let col = (x / z / (tan * aspect) + 1.0) / 2.0 * config.width as f32;
    let row = (1.0 - y / z / tan) / 2.0 * config.height as f32;
    (col as usize, row as usize)
}

#[test]
fn camera_draws_a_prop_in_its_colour_where_it_projects() {
    let model = so101();
    let config = CameraConfig {
        width: 96,
        height: 96,
        ..CameraConfig::default()
    };
    let camera = Camera::new(config.clone()).unwrap();
    for xy in [[0.25, -0.1], [0.3, 0.05], [0.18, -0.2]] {
        let world = world_with_cube(&model, xy);
        let prop = &world.props()[0];
        assert_eq!(prop.rgb, cerebellum_sim::camera::CUBE_RGB);
        let top = prop.pose.translation.z + CubeConfig::default().size / 2.0;
        // The centre of the cube's top face, which faces the light and the
        // camera: lit red.
        let (col, row) = project(&config, [xy[0], xy[1], top]);
        let image = camera.render(&world);
        let at = (row * 96 + col) * 3;
        let pixel = [image.data[at], image.data[at + 1], image.data[at + 2]];
        assert!(
            is_red(pixel),
            "cube at {xy:?}: pixel ({col}, {row}) is {pixel:?}"
        );
        let lit =
            [0.85f32, 0.08, 0.08].map(|c| (c * (0.35 + 0.65 * light_z()) * 255.0 + 0.5) as u8);
        assert_eq!(pixel, lit, "the top face is lit by the light's z component");
    }
}

/// The light's z component (LIGHT = (−0.4, −0.15, 1) normalised): the
/// Lambert factor of a face pointing up.
fn light_z() -> f32 {
    1.0 / (0.4f32 * 0.4 + 0.15 * 0.15 + 1.0).sqrt()
}

#[test]
fn camera_frames_are_bit_identical_for_the_same_world_across_cameras_and_threads() {
    use cerebellum_core::Action;
    let model = so101();
    let make = || {
        let config = EnvConfig {
            task: TaskKind::Lift,
            cameras: two_cameras(),
            ..EnvConfig::default()
        };
        (0..4)
            .map(|_| SimEnv::new(config.clone(), Some(model.clone())).unwrap())
            .collect::<Vec<_>>()
    };
    let run = |threads: usize| {
        let mut env = VecEnv::new(make(), 11, threads);
        let mut frames = vec![env.reset().unwrap()];
        let commands = vec![Action::new(vec![0.3, -0.2, 0.4, 0.5, 0.1, 0.6]); 4];
        for _ in 0..5 {
            frames.push(
                env.step(&commands)
                    .unwrap()
                    .into_iter()
                    .map(|s| s.observation)
                    .collect(),
            );
        }
        frames
    };
    fn shared_across_threads<T: Send + Sync>() {}
    shared_across_threads::<Camera>();
    shared_across_threads::<cerebellum_sim::camera::Scene>();
    let one = run(1);
    assert_eq!(one, run(1), "same seeds, same bytes");
    assert_eq!(one, run(2), "thread count changes nothing");
    // The scene shared by a frame's cameras renders what each camera alone
    // renders.
    let world = world_with_cube(&model, [0.2, 0.1]);
    let scene = cerebellum_sim::camera::Scene::new(&world);
    for config in two_cameras() {
        let camera = Camera::new(config).unwrap();
        assert_eq!(camera.render_scene(&scene), camera.render(&world));
    }
}
