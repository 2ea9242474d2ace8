// The evaluation shared by `biflow eval` and `biflow demo`: sample with each sampler from the same noise, time it, grade it.
package dev.biflow.cli;

import com.fasterxml.jackson.databind.ObjectMapper;
import dev.biflow.engine.Rng;
import dev.biflow.engine.Tensor;
import dev.biflow.flow.inverse.BackwardCheckpoints;
import dev.biflow.flow.inverse.BackwardConfig;
import dev.biflow.flow.inverse.BiFlowSampler;
import dev.biflow.flow.inverse.FrozenFlow;
import dev.biflow.flow.data.ImageDataset;
import dev.biflow.flow.metrics.Metrics;
import dev.biflow.flow.model.TarFlow;
import dev.biflow.flow.model.TarFlowConfig;
import dev.biflow.flow.train.Evaluation;
import me.tongfei.progressbar.ProgressBar;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * Grades a forward flow F and, when given, its BiFlow backward model G the same way:
 * <ol>
 *   <li>bits/dim of F on the test set (optional);</li>
 *   <li>the real-vs-real floor: test images against a training subset, graded by FashionNet-eval;</li>
 *   <li>for each sampler, n samples from the same noise eps and the same labels (classes cycling),
 *       timed batch by batch after an untimed warm-up batch, then graded against that training subset.</li>
 * </ol>
 * The samplers are TARFlow's (exact inverse of F, token by token with its KV cache, CFG as a second
 * pass per step, then one score-denoising step: forward + backward of F) and BiFlow's (one pass of G,
 * CFG trained in, denoising learned). NFE counts sequential network passes: the exact inverse needs
 * one per token per block (times two with CFG) plus the denoising pass; G needs one.
 */
public final class SamplerEval {
    private static final ObjectMapper JSON = new ObjectMapper();

    /**
     * How a sampler's n images are drawn and embedded when not here batch by batch: the spark module
     * spreads them over a cluster ({@code biflow spark eval}). The grading stays here: the embeddings come
     * back whole, in order, so the metrics are computed from exactly the arrays one machine would have.
     */
    public interface Spread {
        Drawn draw(Job job);
    }

    /**
     * One sampler's share of an evaluation: which sampler ({@link #EXACT} or {@link #BIFLOW}), the noise
     * seed, the count, the batch, the guidance w, the denoising sigma, and how many leading images the
     * grid needs back.
     */
    public record Job(String sampler, long seed, int n, int batch, float w, float sigma, int keep) implements java.io.Serializable {}

    /** The embedded images (n, in order), the first {@code keep} images, and the sampling's wall-clock seconds. */
    public record Drawn(Metrics.Embedding embedding, Tensor first, double seconds) {}

    public static final String EXACT = "exact", BIFLOW = "biflow";

    /** The sampler a job names: F's exact inverse (score-denoised) or G's one pass (on the CPU). */
    public static BiFlowSampler sampler(String which, FrozenFlow ff, dev.biflow.flow.inverse.BiFlowModel g, float sigma) {
        return switch (which) {
            case EXACT -> BiFlowSampler.exactInverse(ff, BackwardConfig.Denoise.SCORE, sigma);
            case BIFLOW -> BiFlowSampler.of(ff, g, sigma);
            default -> throw new IllegalArgumentException("unknown sampler " + which);
        };
    }

    /**
     * Images [from, from + count) of a job, (count, C, H, W): image i's noise is row i of
     * {@code Tensor.randn(new Rng(seed), n, T, D)} (entered with Rng.skipNormals), its label i mod classes,
     * sampled --batch at a time; the samplers work row by row, so any range equals those rows of one run.
     */
    public static Tensor sampleRange(BiFlowSampler sampler, TarFlowConfig cfg, Job job, int from, int count) {
        Rng rng = new Rng(job.seed());
        rng.skipNormals((long) from * cfg.tokens() * cfg.tokenDim());
        Tensor[] parts = new Tensor[(count + job.batch() - 1) / job.batch()];
        for (int i = 0, b = 0; i < count; i += job.batch(), b++) {
            int m = Math.min(job.batch(), count - i);
            Tensor e = Tensor.randn(rng, m, cfg.tokens(), cfg.tokenDim());
            parts[b] = sampler.sample(e, Common.labels("all", from + i, m, cfg.numClasses()), job.w());
        }
        return parts.length == 1 ? parts[0] : dev.biflow.engine.Ops.concat(0, parts);
    }

    /** One row of the results table. */
    record Row(String sampler, int nfe, double msPerImage, Metrics.Report report) {
        double imagesPerSecond() { return 1000.0 / msPerImage; }

        Map<String, Object> toMap() {
            Map<String, Object> m = new LinkedHashMap<>();
            m.put("sampler", sampler);
            m.put("nfe", nfe);
            m.put("ms_per_image", Double.isNaN(msPerImage) ? null : msPerImage);
            m.put("images_per_s", Double.isNaN(msPerImage) ? null : imagesPerSecond());
            m.putAll(report.toMap());
            return m;
        }

        String[] cells() {
            Metrics.Report r = report;
            return new String[]{sampler, nfe < 0 ? "-" : Integer.toString(nfe),
                    Double.isNaN(msPerImage) ? "-" : String.format(Locale.ROOT, "%.2f", msPerImage),
                    Double.isNaN(msPerImage) ? "-" : String.format(Locale.ROOT, "%.1f", imagesPerSecond()),
                    String.format(Locale.ROOT, "%.3f", r.fd()), String.format(Locale.ROOT, "%.3f", r.classifierScore()),
                    String.format(Locale.ROOT, "%.3f", r.precision()), String.format(Locale.ROOT, "%.3f", r.recall()),
                    Double.isNaN(r.classConsistency()) ? "-" : String.format(Locale.ROOT, "%.3f", r.classConsistency())};
        }
    }

    static final String[] HEADER = {"sampler", "NFE", "ms/image", "images/s", Metrics.FD_NAME, Metrics.CS_NAME, "precision", "recall",
            "class consistency"};

    /** What was measured; rows[0] is the real-data floor; reconMse NaN without G. */
    record Result(double bitsPerDim, int bpdImages, List<Row> rows, Path grid, double reconMse, int reconImages) {
        Map<String, String> summary() {
            Map<String, String> s = new LinkedHashMap<>();
            if (!Double.isNaN(bitsPerDim)) s.put("test bits/dim (F)", String.format(Locale.ROOT, "%.4f over %d images", bitsPerDim, bpdImages));
            if (!Double.isNaN(reconMse))
                s.put("G inverting F on test images: MSE of G(F(x + sigma eps)) vs x (images in [-1, 1])",
                        String.format(Locale.ROOT, "%.4f over %d images (reconstruction-biflow.png)", reconMse, reconImages));
            Row exact = find("exact"), biflow = find("biflow");
            if (exact != null && biflow != null)
                s.put("speed-up of BiFlow 1-NFE over the exact inverse", String.format(Locale.ROOT, "%.1fx (%.2f vs %.2f ms/image)",
                        exact.msPerImage / biflow.msPerImage, biflow.msPerImage, exact.msPerImage));
            return s;
        }

        Row find(String prefix) {
            for (Row r : rows) if (r.sampler.startsWith(prefix)) return r;
            return null;
        }

        List<String[]> table() {
            List<String[]> t = new ArrayList<>();
            t.add(HEADER);
            for (Row r : rows) t.add(r.cells());
            return t;
        }

        String tableText() {
            StringBuilder b = new StringBuilder();
            for (String[] r : table())
                b.append(String.format(Locale.ROOT, "%-28s %6s %9s %9s %14s %14s %9s %7s %17s%n", (Object[]) r));
            return b.toString();
        }
    }

    /**
     * What to evaluate and how much. Each sampler is graded at each of its guidance scales (exact: two-pass CFG of F;
     * BiFlow: G's trained-in or two-pass guidance); the first scale of each list is the headline pair that the grid
     * shows. The two samplers' scales are separate because the same number does not mean the same guidance: the
     * exact inverse extrapolates F's per-token affine parameters, G extrapolates its outputs (see docs/RESULTS.md).
     */
    record Settings(int samples, int batch, List<Float> wExact, List<Float> wBiflow, float sigma, long seed, int bpdImages, int nrow) {
        Settings {
            wExact = List.copyOf(wExact);
            wBiflow = List.copyOf(wBiflow);
            if (wExact.isEmpty()) throw new IllegalArgumentException("at least one guidance scale for the exact inverse");
            for (float w : wExact) checkScale(w);
            for (float w : wBiflow) checkScale(w);
        }

        /** Both samplers at one scale. */
        Settings(int samples, int batch, float w, float sigma, long seed, int bpdImages, int nrow) {
            this(samples, batch, List.of(w), List.of(w), sigma, seed, bpdImages, nrow);
        }

        private static void checkScale(float w) {
            if (!(w >= 0) || Float.isInfinite(w)) throw new IllegalArgumentException("guidance scale w must be finite and >= 0, got " + w);
        }
    }

    private SamplerEval() {}

    /** The default guidance scale of the exact inverse (and of G when nothing else says). */
    static final float DEFAULT_W = 1f;

    /**
     * The guidance scales to grade at, {exact, BiFlow}, from a command's options: a sweep grades both samplers at every
     * scale; otherwise the exact inverse runs at {@code w} (default 1) and G at {@code wBiflow}, else at the scale
     * recorded in its checkpoint ({@code guidance_w}), else at an explicit {@code w}, else 1. {@code unguided} adds
     * w = 0 for both (the paper's ablations are without guidance).
     */
    static List<List<Float>> scales(Float w, Float wBiflow, List<Float> sweep, boolean unguided, BackwardCheckpoints.Loaded g) {
        if (sweep != null && !sweep.isEmpty()) {
            if (w != null || wBiflow != null) throw new IllegalArgumentException("--w-sweep grades both samplers at every scale; drop --w and --w-biflow");
            List<Float> sorted = new ArrayList<>(new java.util.TreeSet<>(sweep));
            return List.of(sorted, sorted);
        }
        float we = w != null ? w : DEFAULT_W;
        float wb = wBiflow != null ? wBiflow : g != null && !Float.isNaN(g.guidance()) ? g.guidance() : we;
        List<Float> exact = new ArrayList<>(List.of(we)), biflow = new ArrayList<>(List.of(wb));
        if (unguided) {
            if (we != 0) exact.add(0f);
            if (wb != 0) biflow.add(0f);
        }
        return List.of(exact, biflow);
    }

    static Result run(TarFlow f, BackwardCheckpoints.Loaded g, Metrics metrics, ImageDataset train, ImageDataset test,
                      Settings s, Path outDir) throws IOException {
        return run(f, g, metrics, train, test, s, outDir, null);
    }

    /** spread null: every sampler's images are drawn here. */
    static Result run(TarFlow f, BackwardCheckpoints.Loaded g, Metrics metrics, ImageDataset train, ImageDataset test,
                      Settings s, Path outDir, Spread spread) throws IOException {
        TarFlowConfig cfg = f.config;
        double bpd = Double.NaN;
        int bpdN = Math.min(s.bpdImages(), test.n);
        if (bpdN > 0) {
            try (ProgressBar pb = Common.bar("bits/dim", bpdN, "img")) {
                bpd = Evaluation.bitsPerDim(f, test, bpdN, 100, s.seed(), pb::stepTo);
            }
        }
        List<Row> rows = new ArrayList<>();
        if (s.samples() == 0 || metrics == null) return new Result(bpd, bpdN, rows, null, Double.NaN, 0); // bits/dim only
        Metrics.Reference ref = metrics.reference(test, train, s.samples(), s.seed());
        rows.add(new Row("real test vs train (floor)", -1, Double.NaN, ref.report()));

        FrozenFlow ff = FrozenFlow.of(f);
        float sigma = g != null ? g.sigma() : s.sigma();
        int n = s.samples();
        int[] y = labels(cfg, n);
        // one noise tensor for every sampler: the rows differ only by the sampler
        Tensor eps = noise(cfg, n, s.seed());

        BiFlowSampler exact = sampler(EXACT, ff, null, sigma);
        int lead = Math.min(n, 2 * s.nrow()); // the leading images the grid shows (writeGrid)
        List<Tensor> headline = new ArrayList<>(); // the first exact and the first BiFlow sample set, for the grid
        for (float w : s.wExact()) {
            int exactNfe = exactNfe(cfg, w);
            String name = String.format(Locale.ROOT, "exact inverse, CFG w=%s", fmt(w));
            List<Tensor> keep = headline.isEmpty() ? headline : null;
            rows.add(spread != null ? graded(name, exactNfe, spread.draw(new Job(EXACT, s.seed(), n, s.batch(), w, sigma, lead)), y, metrics, ref, keep)
                    : timeAndGrade(name, exactNfe, exact, w, eps, y, s, metrics, ref, keep));
        }
        if (g != null) {
            for (float w : s.wBiflow()) {
                String name = String.format(Locale.ROOT, "biflow 1-NFE, w=%s", fmt(w));
                List<Tensor> keep = headline.size() == 1 ? headline : null;
                if (spread != null) {
                    rows.add(graded(name, sampler(BIFLOW, ff, g.model(), sigma).evaluationsPerSample(w),
                            spread.draw(new Job(BIFLOW, s.seed(), n, s.batch(), w, sigma, lead)), y, metrics, ref, keep));
                    continue;
                }
                try (Common.DeviceSampler ds = Common.biflowSampler(ff, g.model(), sigma, s.batch(), w)) {
                    BiFlowSampler one = ds.sampler();
                    rows.add(timeAndGrade(name, one.evaluationsPerSample(w), one, w, eps, y, s, metrics, ref, keep));
                }
            }
        }
        double recon = Double.NaN;
        int reconN = 0;
        if (g != null) {
            reconN = Math.min(n, test.n);
            recon = reconstruction(f, g, test, reconN, s, outDir);
        }
        Path grid = null;
        if (outDir != null) {
            Files.createDirectories(outDir);
            // numbers first: a failure drawing the pictures must not lose them
            try (var w = Files.newBufferedWriter(outDir.resolve("eval.jsonl"))) {
                if (!Double.isNaN(bpd)) w.write("{\"test_bpd\":" + bpd + ",\"bpd_images\":" + bpdN + "}\n");
                for (Row r : rows) w.write(JSON.writeValueAsString(r.toMap()) + "\n");
                if (!Double.isNaN(recon)) w.write("{\"recon_mse\":" + recon + ",\"recon_images\":" + reconN + "}\n");
            }
            grid = outDir.resolve(g != null ? "samples-biflow-vs-exact.png" : "samples-exact.png");
            writeGrid(grid, headline, cfg, s.nrow());
            charts(outDir, rows);
            if (s.wExact().size() > 2 || s.wBiflow().size() > 2) guidanceChart(outDir, rows);
        }
        return new Result(bpd, bpdN, rows, grid, recon, reconN);
    }

    /** The noise every sampler starts from (n, T, C p^2): the same for every sampler and run graded with this seed. */
    static Tensor noise(TarFlowConfig cfg, int n, long seed) { return Tensor.randn(new Rng(seed), n, cfg.tokens(), cfg.tokenDim()); }

    /** The requested classes of n samples: cycling through the classes (null for an unconditional F). */
    static int[] labels(TarFlowConfig cfg, int n) { return Common.labels("all", n, cfg.numClasses()); }

    /** Sequential passes of the exact inverse: T - 1 decode steps per block (token 0 is z_0 itself), twice with CFG, plus the score-denoising pass. */
    static int exactNfe(TarFlowConfig cfg, float w) { return cfg.numBlocks() * (cfg.tokens() - 1) * (w > 0 ? 2 : 1) + 1; }

    /** A row from images drawn elsewhere: ms/image is the wall-clock time of the whole draw over n. */
    private static Row graded(String name, int nfe, Drawn d, int[] y, Metrics metrics, Metrics.Reference ref, List<Tensor> keep) {
        if (keep != null) keep.add(d.first());
        int n = d.embedding().n();
        return new Row(name, nfe, d.seconds() * 1000 / n, metrics.evaluate(d.embedding(), y, ref.real()));
    }

    /** Samples eps with labels y at guidance w, timed batch by batch; keeps the samples in {@code keep} when it is not null. */
    static Row timeAndGrade(String name, int nfe, BiFlowSampler sampler, float w, Tensor eps, int[] y, Settings s, Metrics metrics,
                                    Metrics.Reference ref, List<Tensor> keep) {
        int n = eps.size(0), per = eps.size(1) * eps.size(2);
        // warm-up (JIT, pools, caches) outside the timed region, on a small batch of other noise
        int wb = Math.min(8, n);
        sampler.sample(Tensor.randn(new Rng(s.seed() + 1), wb, eps.size(1), eps.size(2)), java.util.Arrays.copyOf(y, wb), w);
        Tensor[] parts = new Tensor[(n + s.batch() - 1) / s.batch()];
        long nanos = 0;
        try (ProgressBar pb = Common.bar(name.split(",")[0], n, "img")) {
            for (int i = 0, b = 0; i < n; i += s.batch(), b++) {
                int m = Math.min(s.batch(), n - i);
                Tensor e = Tensor.of(java.util.Arrays.copyOfRange(eps.data(), i * per, (i + m) * per), m, eps.size(1), eps.size(2));
                long t0 = System.nanoTime();
                parts[b] = sampler.sample(e, java.util.Arrays.copyOfRange(y, i, i + m), w);
                nanos += System.nanoTime() - t0;
                pb.stepTo(i + m);
            }
        }
        Tensor x = dev.biflow.engine.Ops.concat(0, parts);
        if (keep != null) keep.add(x);
        Metrics.Report rep = metrics.evaluate(x, y, ref.real());
        return new Row(name, nfe, nanos / 1e6 / n, rep);
    }

    /**
     * How well G inverts F where F's data lives: x~ = x + sigma eps for the first n test images,
     * z = F(x~), x' = G(z) with its conditional prediction (w = 0); the MSE of x' against the
     * clean x, and a grid of x over x' rows. Set beside the samples from the prior, it separates
     * "G has not learned F^-1" from "G has learned it on F's data manifold only".
     */
    static double reconstruction(TarFlow f, BackwardCheckpoints.Loaded g, ImageDataset test, int n, Settings s, Path outDir)
            throws IOException {
        Rng rng = new Rng(s.seed() + 2);
        double sum = 0;
        Tensor firstX = null, firstR = null;
        for (int i = 0; i < n; i += s.batch()) {
            int m = Math.min(s.batch(), n - i);
            int[] idx = new int[m];
            for (int j = 0; j < m; j++) idx[j] = i + j;
            int[] y = f.config.numClasses() > 0 ? test.labelsOf(idx) : null;
            Tensor x = test.batch(idx, ImageDataset.Noise.NONE, 0f, null);
            Tensor xt = test.batch(idx, ImageDataset.Noise.GAUSSIAN, g.sigma(), rng);
            Tensor z;
            try (var ng = dev.biflow.engine.Grad.noGrad()) {
                z = f.forward(xt, y).z();
            }
            Tensor r = g.model().generate(z, y, 0f);
            float[] a = x.data(), b = r.data();
            for (int j = 0; j < a.length; j++) sum += (double) (a[j] - b[j]) * (a[j] - b[j]);
            if (firstX == null) {
                firstX = x;
                firstR = r;
            }
        }
        if (outDir != null && firstX != null) {
            Files.createDirectories(outDir);
            writeGrid(outDir.resolve("reconstruction-biflow.png"), List.of(firstX, firstR), f.config, s.nrow());
        }
        return sum / ((double) n * f.config.dims());
    }

    /** Rows of nrow images: for each sampler in turn, the first images, so a column shares noise and label. */
    static void writeGrid(Path out, List<Tensor> samples, TarFlowConfig cfg, int nrow) throws IOException {
        int d = cfg.dims(), rowsPer = 2;
        int per = Math.min(nrow * rowsPer, samples.getFirst().size(0));
        int rows = (per + nrow - 1) / nrow;
        float[] all = new float[samples.size() * rows * nrow * d];
        int img = 0;
        for (int r = 0; r < rows; r++)
            for (Tensor x : samples) {
                for (int c = 0; c < nrow; c++) {
                    int src = r * nrow + c;
                    if (src < x.size(0)) System.arraycopy(x.data(), src * d, all, (img + c) * d, d);
                }
                img += nrow;
            }
        dev.biflow.engine.io.ImageGrid.write(out, Tensor.of(all, img, cfg.inChannels(), cfg.imgSize(), cfg.imgSize()), -1f, 1f, nrow, 2, 3);
    }

    /** sampling-cost.png (ms/image per sampler, log scale) and sample-quality.png (FD per row, with the floor). */
    private static void charts(Path dir, List<Row> rows) throws IOException {
        List<String> names = new ArrayList<>();
        List<Number> ms = new ArrayList<>();
        for (Row r : rows.subList(1, rows.size())) {
            names.add(r.sampler() + " (NFE " + r.nfe() + ")");
            ms.add(r.msPerImage());
        }
        var cost = new org.knowm.xchart.CategoryChartBuilder().width(720).height(320).title("sampling cost (lower is better)")
                .yAxisTitle("ms / image").build();
        cost.getStyler().setLegendVisible(false);
        cost.addSeries("ms/image", names, ms);
        org.knowm.xchart.BitmapEncoder.saveBitmap(cost, dir.resolve("sampling-cost.png").toString(), org.knowm.xchart.BitmapEncoder.BitmapFormat.PNG);
        List<String> all = new ArrayList<>();
        List<Number> fd = new ArrayList<>();
        for (Row r : rows) {
            all.add(r.sampler());
            fd.add(r.report().fd());
        }
        var q = new org.knowm.xchart.CategoryChartBuilder().width(720).height(320).title(Metrics.FD_NAME + " (lower is better; first bar: real data)")
                .yAxisTitle(Metrics.FD_NAME).build();
        q.getStyler().setLegendVisible(false);
        q.addSeries(Metrics.FD_NAME, all, fd);
        org.knowm.xchart.BitmapEncoder.saveBitmap(q, dir.resolve("sample-quality.png").toString(), org.knowm.xchart.BitmapEncoder.BitmapFormat.PNG);
    }

    /** guidance.png: FD against the guidance scale, one line per sampler (a sweep: --w-sweep). */
    private static void guidanceChart(Path dir, List<Row> rows) throws IOException {
        var chart = new org.knowm.xchart.XYChartBuilder().width(720).height(360).title(Metrics.FD_NAME + " against guidance scale w (lower is better)")
                .xAxisTitle("w").yAxisTitle(Metrics.FD_NAME).build();
        for (String sampler : new String[]{"exact inverse", "biflow 1-NFE"}) {
            List<Double> xs = new ArrayList<>(), ys = new ArrayList<>();
            for (Row r : rows)
                if (r.sampler().startsWith(sampler)) {
                    xs.add(Double.parseDouble(r.sampler().substring(r.sampler().lastIndexOf('=') + 1)));
                    ys.add(r.report().fd());
                }
            if (!xs.isEmpty()) chart.addSeries(sampler, xs, ys);
        }
        org.knowm.xchart.BitmapEncoder.saveBitmap(chart, dir.resolve("guidance.png").toString(), org.knowm.xchart.BitmapEncoder.BitmapFormat.PNG);
    }

    /** For each sampler, its row with the lowest FD (a sweep's answer to "which w?"), in row order; empty rows skipped. */
    static List<Row> bestPerSampler(List<Row> rows) {
        List<Row> best = new ArrayList<>();
        for (String sampler : new String[]{"exact inverse", "biflow 1-NFE"}) {
            Row b = null;
            for (Row r : rows) if (r.sampler().startsWith(sampler) && (b == null || r.report().fd() < b.report().fd())) b = r;
            if (b != null) best.add(b);
        }
        return best;
    }

    private static String fmt(float w) {
        return w == (int) w ? Integer.toString((int) w) : Float.toString(w);
    }
}
