// Shared fixtures of the backward-model tests: a tiny structured image set and a briefly trained forward flow.
package dev.biflow.flow.inverse;

import dev.biflow.engine.Rng;
import dev.biflow.engine.Tensor;
import dev.biflow.flow.data.ImageDataset;
import dev.biflow.flow.model.NormControl;
import dev.biflow.flow.model.TarFlow;
import dev.biflow.flow.model.TarFlowConfig;
import dev.biflow.flow.train.ForwardTrainer;
import dev.biflow.flow.train.TrainConfig;

import java.io.IOException;
import java.io.UncheckedIOException;

final class Fixtures {
    private Fixtures() {}

    static final float SIGMA = 0.1f;

    /** n 8x8 images in 3 classes: class-dependent horizontal bars plus a vertical bar at an example-dependent column, with pixel noise. */
    static ImageDataset images(int n, long seed) {
        Rng r = new Rng(seed);
        float[] px = new float[n * 64];
        int[] lab = new int[n];
        for (int i = 0; i < n; i++) {
            lab[i] = i % 3;
            int col = r.nextInt(8);
            for (int y = 0; y < 8; y++)
                for (int x = 0; x < 8; x++) {
                    boolean on = (y % 3) == lab[i] || x == col;
                    px[i * 64 + y * 8 + x] = on ? 200 + r.nextInt(56) : r.nextInt(40);
                }
        }
        return new ImageDataset("bars", px, lab, 1, 8, 8, 3);
    }

    static TarFlowConfig flowConfig() {
        return new TarFlowConfig(1, 8, 2, 16, 2, 1, 3, 8, NormControl.SOFT, 3f);
    }

    private static TarFlow trained;

    /** A TarFlow trained for 50 steps on {@link #images} (built once per JVM; treat it as read-only). */
    static synchronized TarFlow trainedFlow() {
        if (trained == null) {
            TarFlow f = new TarFlow(flowConfig(), new Rng(1));
            TrainConfig tc = TrainConfig.defaults(50).withBatch(16).withWarmup(4).withLr(3e-3).withSeed(3).withSigma(SIGMA);
            try {
                new ForwardTrainer(f, images(96, 5), tc, null).run(new ForwardTrainer.Listener() {});
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
            trained = f;
        }
        return trained;
    }

    static TrainConfig train(long steps) {
        return TrainConfig.defaults(steps).withBatch(16).withWarmup(Math.min(10, steps)).withLr(2e-3).withSeed(7).withSigma(SIGMA);
    }

    static BackwardConfig gConfig() {
        return BackwardConfig.forFlow(flowConfig()).withSize(32, 16, 1, 1);
    }

    /** The first n clean images of a dataset as a batch, with labels. */
    static Tensor clean(ImageDataset d, int n) {
        int[] idx = new int[n];
        for (int i = 0; i < n; i++) idx[i] = i;
        return d.batch(idx, ImageDataset.Noise.NONE, 0, null);
    }

    static int[] labels(ImageDataset d, int n) {
        int[] idx = new int[n];
        for (int i = 0; i < n; i++) idx[i] = i;
        return d.labelsOf(idx);
    }
}
