// Tiny feature-network configs and a synthetic labelled image set, so feature tests run in milliseconds.
package dev.biflow.flow.features;

import dev.biflow.engine.Rng;
import dev.biflow.flow.data.ImageDataset;

import java.util.List;

final class TinyNets {
    private TinyNets() {}

    static FeatureNetConfig convnet() {
        return new FeatureNetConfig(FeatureNetConfig.Arch.CONVNET, 1, 8, 4, List.of(4, 8), List.of(1, 1), 3, 16);
    }

    static FeatureNetConfig convnext() {
        return new FeatureNetConfig(FeatureNetConfig.Arch.CONVNEXT, 1, 8, 4, List.of(4, 8), List.of(1, 1), 3, 0);
    }

    static FeatureNetConfig eval() {
        return new FeatureNetConfig(FeatureNetConfig.Arch.EVAL, 1, 8, 4, List.of(4, 8), List.of(1, 1), 3, 16);
    }

    static List<FeatureNetConfig> all() { return List.of(convnet(), convnext(), eval()); }

    /**
     * n 8x8 images (raw 0..255) in 4 classes: class c lights up quadrant c (with noise and a random
     * pixel-level jitter of the bright square), everything else dark.
     */
    static ImageDataset quadrants(int n, long seed) {
        Rng r = new Rng(seed);
        float[] px = new float[n * 64];
        int[] lab = new int[n];
        for (int i = 0; i < n; i++) {
            int c = r.nextInt(4);
            lab[i] = c;
            int y0 = (c / 2) * 4 + r.nextInt(2) - (c / 2), x0 = (c % 2) * 4 + r.nextInt(2) - (c % 2);
            for (int y = 0; y < 8; y++)
                for (int x = 0; x < 8; x++) {
                    boolean on = y >= y0 && y < y0 + 3 && x >= x0 && x < x0 + 3;
                    px[i * 64 + y * 8 + x] = on ? 180 + r.nextInt(76) : r.nextInt(60);
                }
        }
        return new ImageDataset("quadrants", px, lab, 1, 8, 8, 4);
    }
}
