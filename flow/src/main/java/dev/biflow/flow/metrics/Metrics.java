// Sample-quality metrics graded by FashionNet-eval: FD-FashionNet, CS-FashionNet, precision/recall, class consistency.
package dev.biflow.flow.metrics;

import com.fasterxml.jackson.databind.ObjectMapper;
import dev.biflow.engine.Fused;
import dev.biflow.engine.Grad;
import dev.biflow.engine.Rng;
import dev.biflow.engine.Shape;
import dev.biflow.engine.Tensor;
import dev.biflow.flow.data.ImageDataset;
import dev.biflow.flow.features.FashionNetEval;
import dev.biflow.flow.features.FeatureNet;
import dev.biflow.flow.features.FeatureNetConfig;
import dev.biflow.flow.features.FeatureNets;

import java.io.IOException;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;

/**
 * Evaluates generated images against real ones with the project's evaluation classifier
 * ({@link FashionNetEval}, never used as a training loss):
 * <ul>
 *   <li>{@value #FD_NAME}: {@link FrechetDistance} between Gaussians fitted to its penultimate
 *       features (the 128 hidden units of its head for the default network);</li>
 *   <li>{@value #CS_NAME}: {@link ClassifierScore}, the Inception-Score formula on its softmax;</li>
 *   <li>precision and recall: {@link PrecisionRecall} (k = 3) in the same feature space;</li>
 *   <li>class consistency: {@link ClassConsistency}, its accuracy on class-conditional samples.</li>
 * </ul>
 * None of these is comparable to published FID/IS numbers (different network, different data);
 * they compare runs graded by the same checkpoint at the same sample counts. Every figure has a
 * floor: {@link #reference} computes the same metrics for held-out real images (the test set)
 * against a training subset, what a perfect generator would score.
 *
 * <pre>{@code
 *   Metrics m = Metrics.load(Path.of("models/fashionnet-eval.safetensors"));
 *   Metrics.Reference ref = m.reference(test, train, 10_000, 0);   // real-vs-real floor
 *   Metrics.Report rep = m.evaluate(samples, labels, ref.real());  // samples (N, 1, 28, 28) in [-1, 1]
 * }</pre>
 */
public final class Metrics {
    public static final String FD_NAME = "FD-FashionNet";
    public static final String CS_NAME = "CS-FashionNet";
    private static final ObjectMapper JSON = new ObjectMapper();

    private final FeatureNet net;
    private final int batchSize;
    private final int k;

    /** Metrics graded by evalNet (which must be a FashionNet-eval network); it is frozen and put in eval mode. */
    public Metrics(FeatureNet evalNet) { this(evalNet, 500, PrecisionRecall.DEFAULT_K); }

    public Metrics(FeatureNet evalNet, int batchSize, int k) {
        if (evalNet == null || evalNet.config.arch() != FeatureNetConfig.Arch.EVAL)
            throw new IllegalArgumentException("Metrics need a " + FashionNetEval.NAME + " network (arch " + FeatureNetConfig.Arch.EVAL.id
                    + "), got " + (evalNet == null ? "null" : evalNet.config.arch().id)
                    + "; the perceptual-loss networks must not grade the samples they shaped");
        if (batchSize < 1 || k < 1) throw new IllegalArgumentException("Metrics: batch size and k must be >= 1");
        this.net = evalNet;
        this.batchSize = batchSize;
        this.k = k;
        net.eval();
        net.requiresGrad(false);
    }

    /** Loads a FashionNet-eval checkpoint. */
    public static Metrics load(Path path) throws IOException {
        return new Metrics(FeatureNets.load(path, FeatureNetConfig.Arch.EVAL));
    }

    public FeatureNet net() { return net; }

    /**
     * What the evaluation network sees of a set of images.
     *
     * @param features (n, dim) penultimate features, row-major
     * @param probs    (n, numClasses) softmax probabilities, row-major
     */
    public record Embedding(float[] features, float[] probs, int n, int dim, int numClasses) {
        public FrechetDistance.Gaussian gaussian() { return FrechetDistance.fit(features, n, dim); }
    }

    /** Embeds images (N, C, H, W) in [-1, 1], in batches, without recording a graph. */
    public Embedding embed(Tensor images) {
        int[] s = images.shape();
        if (s.length != 4)
            throw new IllegalArgumentException("Metrics.embed: images must be (N, C, H, W), got " + Shape.str(s));
        int n = s[0], per = s[1] * s[2] * s[3];
        float[] src = images.data();
        return embed(n, (start, count) -> Tensor.of(Arrays.copyOfRange(src, start * per, (start + count) * per), count, s[1], s[2], s[3]));
    }

    /** Embeds the images idx of a dataset (no noise). */
    public Embedding embed(ImageDataset data, int[] idx) {
        return embed(idx.length, (start, count) -> data.batch(Arrays.copyOfRange(idx, start, start + count), ImageDataset.Noise.NONE, 0, null));
    }

    /** Supplies images [start, start + count) as a (count, C, H, W) tensor. */
    @FunctionalInterface
    public interface BatchSource { Tensor get(int start, int count); }

    /** Embeds n images drawn batch by batch from source (for sets too large to hold as one tensor). */
    public Embedding embed(int n, BatchSource source) {
        int d = net.config.featureDim(), c = net.config.numClasses();
        float[] feats = new float[n * d], probs = new float[n * c];
        boolean wasTraining = net.isTraining();
        net.eval();
        try (var ng = Grad.noGrad()) {
            for (int s = 0; s < n; s += batchSize) {
                int b = Math.min(batchSize, n - s);
                FeatureNet.Features f = net.run(source.get(s, b));
                System.arraycopy(f.penultimate().data(), 0, feats, s * d, b * d);
                System.arraycopy(Fused.softmax(f.logits(), -1).data(), 0, probs, s * c, b * c);
            }
        } finally {
            net.train(wasTraining);
        }
        return new Embedding(feats, probs, n, d, c);
    }

    /**
     * All metrics, one line of a table.
     *
     * @param n                 images evaluated
     * @param nReal             real images they were compared with
     * @param fd                {@value #FD_NAME} (lower is better, 0 = same feature statistics)
     * @param classifierScore   {@value #CS_NAME} (higher is better, in [1, classes])
     * @param precision         fraction of samples on the real manifold
     * @param recall            fraction of real images on the samples' manifold
     * @param classConsistency  accuracy of the eval classifier against the requested labels (NaN without labels)
     */
    public record Report(int n, int nReal, double fd, double classifierScore, double precision, double recall,
                         double classConsistency) {
        /** Keys as they appear in metrics.jsonl and report tables. */
        public Map<String, Object> toMap() {
            Map<String, Object> m = new LinkedHashMap<>();
            m.put("n", n);
            m.put("n_real", nReal);
            m.put("fd_fashionnet", fd);
            m.put("cs_fashionnet", classifierScore);
            m.put("precision", precision);
            m.put("recall", recall);
            m.put("class_consistency", Double.isNaN(classConsistency) ? null : classConsistency);
            return m;
        }

        public String toJson() {
            try {
                return JSON.writeValueAsString(toMap());
            } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
                throw new IllegalStateException(e);
            }
        }

        @Override
        public String toString() {
            return String.format(Locale.ROOT, "%s %.3f  %s %.3f  precision %.3f  recall %.3f  class-consistency %s  (n=%d vs %d real)",
                    FD_NAME, fd, CS_NAME, classifierScore, precision, recall,
                    Double.isNaN(classConsistency) ? "n/a" : String.format(Locale.ROOT, "%.3f", classConsistency), n, nReal);
        }
    }

    /** Metrics of generated images (labels: the requested class per image, or null for unconditional samples). */
    public Report evaluate(Tensor images, int[] labels, Embedding real) {
        return evaluate(embed(images), labels, real);
    }

    /** Metrics of an embedded sample set against an embedded real set. */
    public Report evaluate(Embedding gen, int[] labels, Embedding real) {
        if (gen.dim() != real.dim() || gen.numClasses() != real.numClasses())
            throw new IllegalArgumentException("Metrics.evaluate: the generated and real embeddings come from different networks ("
                    + gen.dim() + " vs " + real.dim() + " features)");
        if (labels != null && labels.length != gen.n())
            throw new IllegalArgumentException("Metrics.evaluate: " + labels.length + " labels for " + gen.n() + " images");
        double fd = FrechetDistance.distance(gen.gaussian(), real.gaussian());
        double cs = ClassifierScore.compute(gen.probs(), gen.n(), gen.numClasses());
        PrecisionRecall.Result pr = PrecisionRecall.compute(real.features(), real.n(), gen.features(), gen.n(), gen.dim(), k);
        double cc = labels == null ? Double.NaN : ClassConsistency.compute(gen.probs(), gen.n(), gen.numClasses(), labels);
        return new Report(gen.n(), real.n(), fd, cs, pr.precision(), pr.recall(), cc);
    }

    /**
     * The floor of every metric.
     *
     * @param real   the embedded training subset: pass it to {@link #evaluate} for generated images so
     *               that samples and the reference are graded against the same real set
     * @param test   the embedded held-out images
     * @param report test images vs the training subset (class consistency = test accuracy)
     */
    public record Reference(Embedding real, Embedding test, Report report) {}

    /**
     * Held-out real images (the first n of test, or all if fewer) against n random training
     * images (seeded). Generated sets should be evaluated with the same n against {@code real()}.
     */
    public Reference reference(ImageDataset test, ImageDataset train, int n, long seed) {
        int nt = Math.min(n, test.n), nr = Math.min(n, train.n);
        int[] ti = new int[nt];
        for (int i = 0; i < nt; i++) ti[i] = i;
        int[] ri = Arrays.copyOf(new Rng(seed).permutation(train.n), nr);
        Embedding real = embed(train, ri), held = embed(test, ti);
        return new Reference(real, held, evaluate(held, test.labelsOf(ti), real));
    }
}
