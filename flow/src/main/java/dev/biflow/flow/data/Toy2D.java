// 2-D toy densities (two moons, 8 Gaussians, checkerboard) for flows small enough to train in seconds.
package dev.biflow.flow.data;

import dev.biflow.engine.Rng;
import dev.biflow.engine.Tensor;

import java.util.Locale;

/** Samplers of classic 2-D toy distributions, each scaled to roughly unit variance. */
public enum Toy2D {
    TWO_MOONS, EIGHT_GAUSSIANS, CHECKERBOARD;

    /** Parses "two-moons", "8gaussians", "checkerboard" and close spellings. */
    public static Toy2D parse(String s) {
        String k = s.toLowerCase(Locale.ROOT).replaceAll("[^a-z0-9]", "");
        return switch (k) {
            case "twomoons", "moons" -> TWO_MOONS;
            case "8gaussians", "eightgaussians", "gaussians" -> EIGHT_GAUSSIANS;
            case "checkerboard", "checker" -> CHECKERBOARD;
            default -> throw new IllegalArgumentException("unknown toy dataset '" + s + "'; choose two-moons, 8gaussians or checkerboard");
        };
    }

    /** n samples, shape (n, 2). */
    public Tensor sample(Rng rng, int n) {
        float[] d = new float[2 * n];
        for (int i = 0; i < n; i++) {
            double x, y;
            switch (this) {
                case TWO_MOONS -> {
                    double t = Math.PI * rng.nextDouble();
                    if (rng.nextDouble() < 0.5) { x = Math.cos(t); y = Math.sin(t); }
                    else { x = 1 - Math.cos(t); y = 0.5 - Math.sin(t); }
                    x = (x - 0.5) * 1.6 + 0.05 * rng.nextGaussian();
                    y = (y - 0.25) * 1.6 + 0.05 * rng.nextGaussian();
                }
                case EIGHT_GAUSSIANS -> {
                    int c = rng.nextInt(8);
                    double a = c * Math.PI / 4;
                    x = 1.4 * Math.cos(a) + 0.1 * rng.nextGaussian();
                    y = 1.4 * Math.sin(a) + 0.1 * rng.nextGaussian();
                }
                default -> {
                    // alternate cells of a 4x4 board: shift y up by one in every other column
                    double x1 = rng.nextDouble() * 4 - 2;
                    double y1 = rng.nextDouble() - rng.nextInt(2) * 2;
                    x = 0.8 * x1;
                    y = 0.8 * (y1 + Math.floorMod((long) Math.floor(x1), 2L));
                }
            }
            d[2 * i] = (float) x;
            d[2 * i + 1] = (float) y;
        }
        return Tensor.of(d, n, 2);
    }
}
