use super::*;
use candle_core::Var;

fn dev() -> Device {
    Device::Cpu
}

/// A (n, c, h, w) f64 image with distinct values.
fn image(n: usize, c: usize, h: usize, w: usize, seed: u64) -> Tensor {
    let mut rng = Rng::new(seed);
    let v: Vec<f64> = (0..n * c * h * w).map(|_| rng.uniform() * 2.0 - 1.0).collect();
    Tensor::from_vec(v, (n, c, h, w), &dev()).unwrap()
}

fn plan(ops: Vec<Op>) -> Plan {
    Plan { ops }
}

fn values(t: &Tensor) -> Vec<f64> {
    t.flatten_all().unwrap().to_vec1::<f64>().unwrap()
}

fn config(augment: &str, pipe: &str, p: f64) -> TrainConfig {
    TrainConfig { augment: augment.into(), augment_pipe: pipe.into(), augment_p: p, ..TrainConfig::default() }
}

#[test]
fn translation_shifts_with_zero_padding() {
    let x = image(2, 3, 4, 5, 1);
    let op = translation(&[(1, 0), (-2, 1)], 4, 5, DType::F64, &dev()).unwrap();
    let y = plan(vec![op]).apply(&x).unwrap();
    for (b, (dx, dy)) in [(1i64, 0i64), (-2, 1)].into_iter().enumerate() {
        for c in 0..3 {
            let xi = x.get(b).unwrap().get(c).unwrap().to_vec2::<f64>().unwrap();
            let yi = y.get(b).unwrap().get(c).unwrap().to_vec2::<f64>().unwrap();
            for r in 0..4i64 {
                for col in 0..5i64 {
                    let (sr, sc) = (r + dy, col + dx);
                    let want =
                        if (0..4).contains(&sr) && (0..5).contains(&sc) { xi[sr as usize][sc as usize] } else { 0.0 };
                    assert_eq!(yi[r as usize][col as usize], want, "sample {b} ({r}, {col})");
                }
            }
        }
    }
}

#[test]
fn cutout_zeroes_its_square_only() {
    let x = Tensor::ones((2, 3, 6, 6), DType::F64, &dev()).unwrap();
    // Sample 0: centre (3, 2), size 2x2 → rows 2..4, columns 1..3; sample 1 clipped at the corner.
    let op = cutout(&[(3, 2), (0, 0)], (2, 2), 6, 6, DType::F64, &dev()).unwrap();
    let y = plan(vec![op]).apply(&x).unwrap();
    let s0 = y.get(0).unwrap().get(1).unwrap().to_vec2::<f64>().unwrap();
    let s1 = y.get(1).unwrap().get(2).unwrap().to_vec2::<f64>().unwrap();
    for r in 0..6 {
        for c in 0..6 {
            assert_eq!(s0[r][c], if (2..4).contains(&r) && (1..3).contains(&c) { 0.0 } else { 1.0 });
            assert_eq!(s1[r][c], if r == 0 && c == 0 { 0.0 } else { 1.0 });
        }
    }
}

#[test]
fn diffaugment_color_matches_its_closed_form() {
    let x = image(2, 3, 3, 3, 2);
    let params = [(0.3, 1.7, 0.6), (-0.45, 0.2, 1.4)];
    let y = plan(diffaugment_color(&params, 3, DType::F64, &dev()).unwrap()).apply(&x).unwrap();
    for (b, &(br, s, ct)) in params.iter().enumerate() {
        let xb = x.get(b).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
        // brightness, then saturation about the channel mean, then contrast about the mean.
        let x1: Vec<f64> = xb.iter().map(|v| v + br).collect();
        let mut x2 = x1.clone();
        for p in 0..9 {
            let m = (x1[p] + x1[9 + p] + x1[18 + p]) / 3.0;
            for c in 0..3 {
                x2[c * 9 + p] = (x1[c * 9 + p] - m) * s + m;
            }
        }
        let mean = x2.iter().sum::<f64>() / 27.0;
        let want: Vec<f64> = x2.iter().map(|v| (v - mean) * ct + mean).collect();
        let got = values(&y.get(b).unwrap());
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-12, "{g} vs {w}");
        }
    }
}

#[test]
fn warp_flips_rotates_and_translates_exactly() {
    let x = image(1, 3, 6, 6, 3);
    let apply = |m: Mat3| plan(vec![warp(&[m], 6, 6, DType::F64, &dev()).unwrap()]).apply(&x).unwrap();
    // x-flip.
    let flipped = apply(scale2(-1.0, 1.0));
    assert_eq!(values(&flipped), values(&x.flip(&[3]).unwrap()));
    // Four quarter turns are the identity; one is a transposition and a flip.
    let quarter = rotate2(-PI / 2.0);
    let q1 = apply(quarter);
    let turned = x.transpose(2, 3).unwrap().contiguous().unwrap().flip(&[2]).unwrap();
    let alt = x.transpose(2, 3).unwrap().contiguous().unwrap().flip(&[3]).unwrap();
    assert!(values(&q1) == values(&turned) || values(&q1) == values(&alt));
    let full = mul3(&mul3(&quarter, &quarter), &mul3(&quarter, &quarter));
    assert_eq!(values(&apply(full)), values(&x));
    // Integer translation with reflection at the border: output column c reads c + 2.
    let shifted = apply(translate2(2.0, 0.0));
    let xv = x.get(0).unwrap().get(0).unwrap().to_vec2::<f64>().unwrap();
    let yv = shifted.get(0).unwrap().get(0).unwrap().to_vec2::<f64>().unwrap();
    for r in 0..6 {
        for c in 0..6 {
            assert_eq!(yv[r][c], xv[r][reflect(c as i64 + 2, 6) as usize]);
        }
    }
    assert_eq!((reflect(6, 6), reflect(7, 6), reflect(-1, 6), reflect(-7, 6)), (4, 3, 1, 3));
    // Half-pixel translation: the mean of two neighbours.
    let half = apply(translate2(0.5, 0.0));
    let hv = half.get(0).unwrap().get(0).unwrap().to_vec2::<f64>().unwrap();
    assert!((hv[2][1] - (xv[2][1] + xv[2][2]) / 2.0).abs() < 1e-12);
}

#[test]
fn ada_color_transforms_match_their_closed_forms() {
    let apply = |c: Mat4, pixel: [f64; 3]| -> Vec<f64> {
        let x = Tensor::from_vec(pixel.to_vec(), (1, 3, 1, 1), &dev()).unwrap();
        values(&plan(vec![color_matrix(&[c], DType::F64, &dev()).unwrap()]).apply(&x).unwrap())
    };
    let close = |a: &[f64], b: &[f64]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-12);
    // Hue rotation leaves greys alone and keeps the luma of any colour; a third of a turn
    // permutes the channels.
    assert!(close(&apply(rotate_about_luma(1.1), [0.3, 0.3, 0.3]), &[0.3, 0.3, 0.3]));
    let c = apply(rotate_about_luma(2.0 * PI / 3.0), [0.9, -0.2, 0.1]);
    assert!((c.iter().sum::<f64>() - 0.8).abs() < 1e-12);
    assert!(close(&c, &[0.1, 0.9, -0.2]) || close(&c, &[-0.2, 0.1, 0.9]), "{c:?}");
    // A brightness matrix adds, a luma flip negates greys.
    let mut t = IDENTITY4;
    (0..3).for_each(|i| t[i][3] = 0.25);
    assert!(close(&apply(t, [0.1, 0.2, -0.3]), &[0.35, 0.45, -0.05]));
    let v = 1.0 / 3f64.sqrt();
    let flip: Mat4 = std::array::from_fn(|r| {
        std::array::from_fn(|k| IDENTITY4[r][k] - if r < 3 && k < 3 { 2.0 * v * v } else { 0.0 })
    });
    assert!(close(&apply(flip, [0.4, 0.4, 0.4]), &[-0.4, -0.4, -0.4]));
}

#[test]
fn random_plans_draw_what_they_should() {
    let x = image(4, 3, 8, 8, 4);
    let mut rng = Rng::new(5);
    // No augmentation and ADA at p = 0 draw nothing and change nothing.
    for cfg in [config("none", "", 0.0), config("ada", "", 0.0)] {
        let a = Augment::from_config(&cfg).unwrap();
        let before = rng.clone().next_u64();
        let plan = a.plan(&x, &mut rng).unwrap();
        assert!(plan.is_identity());
        assert_eq!(rng.clone().next_u64(), before);
        assert_eq!(values(&plan.apply(&x).unwrap()), values(&x));
    }
    // ADA's blits at p = 1 move pixels without changing them: each sample's values stay a
    // permutation of its own (reflection may repeat some, so compare as multisets only
    // for the flips and quarter turns, which are exact permutations).
    let mut cfg = config("fixed", "b", 1.0);
    let a = Augment::from_config(&cfg).unwrap();
    let y = a.plan(&x, &mut rng).unwrap().apply(&x).unwrap();
    for b in 0..4 {
        let xs: std::collections::HashSet<u64> = values(&x.get(b).unwrap()).iter().map(|v| v.to_bits()).collect();
        assert!(values(&y.get(b).unwrap()).iter().all(|v| xs.contains(&v.to_bits())), "sample {b}");
    }
    // The full pipelines change every sample at p = 1 and keep shape and finiteness.
    for (kind, pipe) in [("fixed", "bgc"), ("diffaugment", "")] {
        cfg = config(kind, pipe, 1.0);
        let a = Augment::from_config(&cfg).unwrap();
        let y = a.plan(&x, &mut rng).unwrap().apply(&x).unwrap();
        assert_eq!(y.dims(), x.dims());
        assert!(values(&y).iter().all(|v| v.is_finite()));
        for b in 0..4 {
            assert_ne!(values(&y.get(b).unwrap()), values(&x.get(b).unwrap()), "{kind} sample {b}");
        }
    }
}

/// Central differences of `f` at `x` along coordinate `i`.
fn central(f: &dyn Fn(&Tensor) -> f64, x: &Tensor, i: usize) -> f64 {
    let shape = x.shape().clone();
    let v = values(x);
    let eps = 1e-6;
    let at = |d: f64| {
        let mut w = v.clone();
        w[i] += d;
        f(&Tensor::from_vec(w, shape.clone(), &dev()).unwrap())
    };
    (at(eps) - at(-eps)) / (2.0 * eps)
}

fn test_plans(x: &Tensor) -> Vec<(&'static str, Plan)> {
    let mut rng = Rng::new(9);
    [("fixed", "bgc"), ("diffaugment", "")]
        .into_iter()
        .map(|(k, p)| (k, Augment::from_config(&config(k, p, 1.0)).unwrap().plan(x, &mut rng).unwrap()))
        .collect()
}

#[test]
fn gradients_through_the_augmentations_equal_finite_differences() {
    let x = image(2, 3, 6, 6, 6);
    let weights = image(2, 3, 6, 6, 7);
    for (name, plan) in test_plans(&x) {
        let loss = |x: &Tensor| plan.apply(x).unwrap().tanh().unwrap().mul(&weights).unwrap().sum_all().unwrap();
        let xv = Var::from_tensor(&x).unwrap();
        let g = loss(xv.as_tensor()).backward().unwrap().get(xv.as_tensor()).unwrap().clone();
        let g = values(&g);
        let f = |x: &Tensor| loss(x).to_scalar::<f64>().unwrap();
        for i in (0..x.elem_count()).step_by(13) {
            let fd = central(&f, &x, i);
            assert!((fd - g[i]).abs() < 1e-6, "{name} [{i}]: {fd} vs {}", g[i]);
        }
    }
}

/// Second order, as a gradient penalty needs it: d/da of ‖∇_x Σ tanh(a ⊙ aug(x))‖².
#[test]
fn penalty_gradients_through_the_augmentations_equal_finite_differences() {
    crate::enable_second_order_gradients();
    let x = image(2, 3, 6, 6, 8);
    let a0 = image(1, 3, 6, 6, 10);
    for (name, plan) in test_plans(&x) {
        let pen = |a: &Tensor| {
            let critic = |x: &Tensor| plan.apply(x)?.broadcast_mul(a)?.tanh()?.flatten_from(1)?.sum(1);
            crate::penalty::input_gradient_norm_sq(&critic, &x).unwrap().sum_all().unwrap()
        };
        let av = Var::from_tensor(&a0).unwrap();
        let g = values(pen(av.as_tensor()).backward().unwrap().get(av.as_tensor()).expect("a gradient for a"));
        let f = |a: &Tensor| pen(a).to_scalar::<f64>().unwrap();
        for i in (0..a0.elem_count()).step_by(7) {
            let fd = central(&f, &a0, i);
            assert!((fd - g[i]).abs() < 1e-5 * (1.0 + fd.abs()), "{name} [{i}]: {fd} vs {}", g[i]);
        }
    }
}

#[test]
fn ada_p_follows_the_sign_of_real_logits() {
    let mut cfg = config("ada", "", 0.5);
    cfg.batch_size = 64;
    cfg.ada_kimg = 1.0;
    let mut a = Augment::from_config(&cfg).unwrap();
    let step = 64.0 * ADA_INTERVAL as f64 / 1000.0;
    let confident = Tensor::new(&[2.0f32, 1.0, 0.5, 3.0], &dev()).unwrap();
    let unsure = Tensor::new(&[2.0f32, -1.0, 0.5, -3.0], &dev()).unwrap();
    for _ in 0..ADA_INTERVAL - 1 {
        a.observe(&confident).unwrap();
    }
    assert_eq!(a.p, 0.5, "p moves only every {ADA_INTERVAL} D steps");
    a.observe(&confident).unwrap();
    assert!((a.p - (0.5 + step)).abs() < 1e-12 && a.last_rt == Some(1.0));
    // r_t = 0 < 0.6: p comes down, and stops at 0.
    for _ in 0..ADA_INTERVAL * 4 {
        a.observe(&unsure).unwrap();
    }
    assert_eq!((a.p, a.last_rt), (0.0, Some(0.0)));
    // The state survives a checkpoint bit for bit, mid-interval too.
    a.observe(&confident).unwrap();
    let state: std::collections::HashMap<String, String> = a.state().into_iter().collect();
    let mut b = Augment::from_config(&cfg).unwrap();
    b.restore(|k| state.get(k).cloned(), "ck").unwrap();
    for _ in 0..ADA_INTERVAL - 1 {
        a.observe(&confident).unwrap();
        b.observe(&confident).unwrap();
    }
    assert_eq!(a.p.to_bits(), b.p.to_bits());
    assert!(a.p > 0.0);
    // DiffAugment and a fixed p ignore the logits.
    let mut f = Augment::from_config(&config("fixed", "", 0.3)).unwrap();
    for _ in 0..8 {
        f.observe(&confident).unwrap();
    }
    assert_eq!(f.p, 0.3);
}

#[test]
fn bad_settings_name_the_setting() {
    let err = |c: TrainConfig| Augment::from_config(&c).unwrap_err().to_string();
    assert!(err(config("adaptive", "", 0.0)).contains("train.augment 'adaptive'"));
    assert!(err(config("diffaugment", "color,blur", 0.0)).contains("'blur'"));
    assert!(err(config("ada", "bgx", 0.0)).contains("'x'"));
    assert!(err(config("fixed", "", 1.5)).contains("train.augment_p"));
    assert!(err(config("none", "bgc", 0.0)).contains("needs an augmentation"));
    assert!(err(TrainConfig { ada_kimg: 0.0, ..config("ada", "", 0.0) }).contains("train.ada_kimg"));
}
