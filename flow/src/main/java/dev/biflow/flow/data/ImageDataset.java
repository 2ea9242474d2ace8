// Labelled image datasets held in memory as uint8 values: Fashion-MNIST / MNIST from IDX files.
package dev.biflow.flow.data;

import dev.biflow.engine.Rng;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.io.Idx;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * Images as raw 0..255 values (N, C, H, W) plus labels. {@link #batch} turns a selection into
 * model inputs in [-1, 1] (x / 127.5 - 1, as ml-tarflow normalises), optionally with Gaussian
 * training noise or uniform dequantisation.
 */
public final class ImageDataset {
    /** Where Debian's dataset-fashion-mnist package puts the files. */
    public static final Path FASHION_MNIST_DIR = Path.of("/usr/share/datasets/fashion-mnist");

    public final String name;
    public final float[] pixels; // (N, C, H, W) raw 0..255
    public final int[] labels;
    public final int n, channels, height, width, numClasses;

    public ImageDataset(String name, float[] pixels, int[] labels, int channels, int height, int width, int numClasses) {
        this.name = name;
        this.pixels = pixels;
        this.labels = labels;
        this.channels = channels;
        this.height = height;
        this.width = width;
        this.numClasses = numClasses;
        this.n = labels.length;
        if ((long) n * channels * height * width != pixels.length)
            throw new IllegalArgumentException(name + ": " + pixels.length + " pixel values for " + n + " images of " + channels + "x" + height + "x" + width);
    }

    public int dims() { return channels * height * width; }

    /**
     * Loads split "train" or "test" of an MNIST-format directory (train-images-idx3-ubyte[.gz],
     * train-labels-idx1-ubyte[.gz], t10k-...). A missing or corrupt dataset is an IOException
     * that says how to get it.
     */
    /** The most classes a labels file may use (a label beyond is taken for corruption). */
    public static final int MAX_CLASSES = 1 << 16;

    public static ImageDataset loadIdx(Path dir, String split) throws IOException {
        String prefix = switch (split) {
            case "train" -> "train";
            case "test" -> "t10k";
            default -> throw new IllegalArgumentException("split must be train or test, got " + split);
        };
        Path img = find(dir, prefix + "-images-idx3-ubyte"), lab = find(dir, prefix + "-labels-idx1-ubyte");
        Tensor images = Idx.readTensor(img);
        int[] labels = Idx.readLabels(lab);
        int[] s = images.shape();
        if (s.length != 3)
            throw new IOException(img + ": expected images (N, H, W), found shape " + java.util.Arrays.toString(s));
        if (s[0] != labels.length)
            throw new IOException(img + " has " + s[0] + " images but " + lab + " has " + labels.length + " labels; the files do not belong together");
        if (labels.length == 0)
            throw new IOException(img + " holds no images (the " + split + " split is empty); re-download the dataset or point --data at a complete one");
        int classes = 0;
        for (int i = 0; i < labels.length; i++) {
            int l = labels[i];
            if (l < 0 || l >= MAX_CLASSES)
                throw new IOException(lab + ": label " + l + " of image " + i + " is outside [0, " + MAX_CLASSES + "); the labels file is corrupt"
                        + " or not a class-label file");
            classes = Math.max(classes, l + 1);
        }
        float[] px = images.data();
        for (int i = 0; i < px.length; i++)
            if (!Float.isFinite(px[i]))
                throw new IOException(img + ": pixel " + i + " of the images is " + px[i] + "; images must hold finite values (0..255)");
        return new ImageDataset(dir.getFileName() + "/" + split, images.data(), labels, 1, s[1], s[2], Math.max(classes, 10));
    }

    private static Path find(Path dir, String base) throws IOException {
        for (String ext : new String[]{".gz", ""}) {
            Path p = dir.resolve(base + ext);
            if (Files.isRegularFile(p)) return p;
        }
        throw new IOException("dataset file " + base + "[.gz] not found in " + dir + ". For Fashion-MNIST run "
                + "`apt-get install dataset-fashion-mnist` (installs " + FASHION_MNIST_DIR + "), or pass --data DIR "
                + "with the four MNIST-format IDX files (MNIST itself works too)");
    }

    /** The first n images (for quick runs and tests). */
    public ImageDataset head(int count) {
        int c = Math.min(count, n), d = dims();
        float[] p = java.util.Arrays.copyOf(pixels, c * d);
        return new ImageDataset(name + "[:" + c + "]", p, java.util.Arrays.copyOf(labels, c), channels, height, width, numClasses);
    }

    /** How a batch's pixels become model inputs. */
    public enum Noise { NONE, GAUSSIAN, UNIFORM_DEQUANT }

    /**
     * Images idx as (B, C, H, W) in [-1, 1]. GAUSSIAN adds sigma * eps (training noise);
     * UNIFORM_DEQUANT maps x_int to (x_int + u) / 256 * 2 - 1 (for bits/dim); NONE is x / 127.5 - 1.
     */
    public Tensor batch(int[] idx, Noise noise, float sigma, Rng rng) {
        int d = dims();
        float[] out = new float[idx.length * d];
        for (int i = 0; i < idx.length; i++) {
            int src = idx[i] * d, dst = i * d;
            for (int j = 0; j < d; j++) {
                float v = pixels[src + j];
                out[dst + j] = switch (noise) {
                    case NONE -> v / 127.5f - 1f;
                    case GAUSSIAN -> v / 127.5f - 1f + sigma * (float) rng.nextGaussian();
                    case UNIFORM_DEQUANT -> (v + rng.nextFloat()) / 128f - 1f;
                };
            }
        }
        return Tensor.of(out, idx.length, channels, height, width);
    }

    public int[] labelsOf(int[] idx) {
        int[] y = new int[idx.length];
        for (int i = 0; i < idx.length; i++) y[i] = labels[idx[i]];
        return y;
    }
}
