// The outputs of biflow ablate: results.jsonl, the per-variant table (mean and spread over seeds), fd.png, tradeoff.png and report.html.
package dev.biflow.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.biflow.flow.metrics.Metrics;
import org.knowm.xchart.BitmapEncoder;
import org.knowm.xchart.CategoryChart;
import org.knowm.xchart.CategoryChartBuilder;
import org.knowm.xchart.XYChart;
import org.knowm.xchart.XYChartBuilder;
import org.knowm.xchart.XYSeries;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * Collects the grade.json of every run of a grid (finished ones only: a missing one counts as not
 * done) into one row per variant and guidance scale: for each metric the mean over seeds and the
 * spread (sample standard deviation, and min-max in the CSV), and how many seeds are done.
 */
final class AblateTable {
    static final String TABLE_MD = "table.md", TABLE_CSV = "table.csv", RESULTS = "results.jsonl", PLOT = "fd.png", TRADEOFF = "tradeoff.png";
    private static final ObjectMapper JSON = new ObjectMapper();

    /** The metrics of the table: key in grade.json's rows (or the run's, see {@link #RUN_KEYS}), column title, decimals. */
    record Metric(String key, String title, int decimals) {}

    static final List<Metric> METRICS = List.of(new Metric("fd_fashionnet", Metrics.FD_NAME, 2), new Metric("precision", "precision", 3),
            new Metric("recall", "recall", 3), new Metric("class_consistency", "class consistency", 3), new Metric("recon_mse", "recon MSE", 4),
            new Metric("ms_per_image", "ms/img", 2), new Metric("train_minutes", "G train min", 1), new Metric("g_params", "G params", 0));

    /** Metrics of the run, not of one guidance scale: read from grade.json's top level (train_minutes from train_seconds). */
    private static final List<String> RUN_KEYS = List.of("recon_mse", "train_minutes", "g_params");

    private static JsonNode runValue(JsonNode grade, String key) {
        if (key.equals("train_minutes")) {
            JsonNode s = grade.get("train_seconds");
            return s != null && s.isNumber() ? JSON.getNodeFactory().numberNode(s.asDouble() / 60) : null;
        }
        return grade.get(key);
    }

    /** Mean, sample standard deviation (NaN for one value), min and max of a metric over the seeds done. */
    record Spread(int n, double mean, double sd, double min, double max) {
        static Spread of(List<Double> v) {
            int n = v.size();
            if (n == 0) return new Spread(0, Double.NaN, Double.NaN, Double.NaN, Double.NaN);
            double mean = 0, min = Double.POSITIVE_INFINITY, max = Double.NEGATIVE_INFINITY;
            for (double x : v) {
                mean += x;
                min = Math.min(min, x);
                max = Math.max(max, x);
            }
            mean /= n;
            double ss = 0;
            for (double x : v) ss += (x - mean) * (x - mean);
            return new Spread(n, mean, n > 1 ? Math.sqrt(ss / (n - 1)) : Double.NaN, min, max);
        }
    }

    /** One row: a variant at one guidance scale. */
    record Row(String variant, float w, int seedsDone, int seedsPlanned, boolean exactInverse, Map<String, Spread> metrics) {}

    private AblateTable() {}

    /** Reads every run's grades, writes results.jsonl, table.md, table.csv, fd.png and report.html into dir; returns the report. */
    static Path write(Path dir, AblateGrid g, List<AblateCommand.Run> runs, String command, List<AblateCommand.Failure> failures) throws IOException {
        List<Row> rows = new ArrayList<>();
        JsonNode floor = null;
        StringBuilder jsonl = new StringBuilder();
        for (AblateGrid.Variant v : g.variants) {
            List<JsonNode> grades = new ArrayList<>();
            int planned = 0;
            Path shown = dir.resolve("samples-" + v.name() + ".png");
            Files.deleteIfExists(shown);
            for (AblateCommand.Run r : runs) {
                if (!r.variant().name().equals(v.name())) continue;
                planned++;
                JsonNode gr = AblateCommand.readJson(r.dir().resolve(AblateCommand.GRADE_FILE));
                if (gr == null) continue;
                grades.add(gr);
                // the report shows each variant's samples: its first graded run at the first guidance scale
                Path grid = r.dir().resolve("samples-w" + AblateGrid.fmt(g.guidance.getFirst()) + ".png");
                if (!Files.exists(shown) && Files.exists(grid)) Files.copy(grid, shown);
                for (JsonNode row : gr.path("rows")) {
                    ObjectNode line = JSON.createObjectNode();
                    line.put("variant", v.name());
                    line.set("seed", gr.get("seed"));
                    line.put("run", dir.relativize(r.dir()).toString());
                    line.setAll((ObjectNode) row);
                    for (String k : List.of("recon_mse", "recon_images", "steps", "train_seconds", "g_params", "forward", "model"))
                        if (gr.has(k)) line.set(k, gr.get(k));
                    jsonl.append(JSON.writeValueAsString(line)).append('\n');
                }
            }
            for (float w : g.guidance) {
                Map<String, List<Double>> values = new LinkedHashMap<>();
                int done = 0;
                for (JsonNode gr : grades) {
                    JsonNode row = null;
                    for (JsonNode x : gr.path("rows")) if ((float) x.path("w").asDouble() == w) row = x;
                    if (row == null) continue;
                    done++;
                    for (Metric m : METRICS) {
                        JsonNode val = RUN_KEYS.contains(m.key()) ? runValue(gr, m.key()) : row.get(m.key());
                        if (val != null && val.isNumber()) values.computeIfAbsent(m.key(), k -> new ArrayList<>()).add(val.asDouble());
                    }
                }
                Map<String, Spread> spreads = new LinkedHashMap<>();
                for (Metric m : METRICS) spreads.put(m.key(), Spread.of(values.getOrDefault(m.key(), List.of())));
                rows.add(new Row(v.name(), w, done, planned, v.exactInverse(), spreads));
            }
        }
        Files.writeString(dir.resolve(RESULTS), jsonl);
        Path floorFile = dir.resolve("floor.json");
        if (Files.exists(floorFile)) floor = AblateCommand.readJson(floorFile);
        List<String[]> table = table(rows, floor);
        Files.writeString(dir.resolve(TABLE_MD), markdown(table));
        Files.writeString(dir.resolve(TABLE_CSV), csv(rows));
        plot(dir.resolve(PLOT), rows, g);
        tradeoff(dir.resolve(TRADEOFF), rows, g);
        Map<String, String> summary = new LinkedHashMap<>();
        summary.put("grid", g.source + (g.description.isEmpty() ? "" : ": " + g.description));
        summary.put("budget per G run", g.describeBudgets());
        for (AblateGrid.Variant v : g.variants)
            summary.put("variant " + v.name(), (v.overrides().isEmpty() ? "the base options" : String.join(" ", AblateGrid.args(v.overrides())))
                    + ", F " + v.forward() + (v.exactInverse() ? " (F's exact inverse: nothing trained)" : ""));
        summary.put("seeds per variant", g.seeds + " (0 .. " + (g.seeds - 1) + "); an exact-inverse variant has no training and is graded once");
        summary.put("grading", String.format(Locale.ROOT, "%d samples per run and guidance scale, noise seed %d, labels cycling through the classes, "
                + "evaluation network %s, data %s; cells are mean +- sample sd over the seeds done", g.samples, g.evalSeed, g.evalNet, g.data));
        long done = runs.stream().filter(r -> Files.exists(r.dir().resolve(AblateCommand.GRADE_FILE))).count();
        summary.put("runs", done + " of " + runs.size() + " graded" + (failures.isEmpty() ? "" : "; failed this time: "
                + String.join(", ", failures.stream().map(f -> f.run().label()).toList())));
        summary.put("files", RESULTS + " (one line per run and guidance scale), " + TABLE_MD + ", " + TABLE_CSV + ", runs/<variant>/seed-<s>/ "
                + "(train-backward's run folder, " + AblateCommand.GRADE_FILE + ", samples-w<w>.png); samples-<variant>.png: the first images of each "
                + "variant's first graded run at the first guidance scale (the same noise and labels in every variant)");
        return RunReport.write(dir, "ablate " + g.name, command, summary, table);
    }

    /** The table as cells, first row the header; the real-data floor first when known. */
    static List<String[]> table(List<Row> rows, JsonNode floor) {
        List<String[]> t = new ArrayList<>();
        List<String> h = new ArrayList<>(List.of("variant", "w", "seeds"));
        for (Metric m : METRICS) h.add(m.title());
        t.add(h.toArray(String[]::new));
        if (floor != null) {
            List<String> c = new ArrayList<>(List.of("real test vs train (floor)", "-", "-"));
            for (Metric m : METRICS) c.add(floor.path(m.key()).isNumber() ? num(floor.get(m.key()).asDouble(), m.decimals()) : "-");
            t.add(c.toArray(String[]::new));
        }
        for (Row r : rows) {
            List<String> c = new ArrayList<>(List.of(r.variant() + (r.exactInverse() ? " (exact inverse)" : ""), AblateGrid.fmt(r.w()),
                    r.exactInverse() ? r.seedsDone() + " (no training)" : r.seedsDone() + "/" + r.seedsPlanned()));
            for (Metric m : METRICS) c.add(cell(r.metrics().get(m.key()), m.decimals()));
            t.add(c.toArray(String[]::new));
        }
        return t;
    }

    private static String cell(Spread s, int decimals) {
        if (s.n() == 0) return "-";
        // no spread shown where there is none to show (one seed; a size that every seed shares)
        return num(s.mean(), decimals) + (Double.isNaN(s.sd()) || s.sd() == 0 && s.min() == s.max() ? "" : " ± " + num(s.sd(), decimals));
    }

    private static String num(double v, int decimals) { return String.format(Locale.ROOT, "%." + decimals + "f", v); }

    static String markdown(List<String[]> t) {
        StringBuilder b = new StringBuilder();
        for (int i = 0; i < t.size(); i++) {
            b.append("| ").append(String.join(" | ", t.get(i))).append(" |\n");
            if (i == 0) b.append("|").append("---|".repeat(t.get(0).length)).append('\n');
        }
        return b.toString();
    }

    /** One line per variant and guidance scale: seeds done and planned, then mean, sd, min, max of each metric (empty where undefined). */
    static String csv(List<Row> rows) {
        StringBuilder b = new StringBuilder("variant,w,exact_inverse,seeds_done,seeds_planned");
        for (Metric m : METRICS) for (String s : List.of("mean", "sd", "min", "max")) b.append(',').append(m.key()).append('_').append(s);
        b.append('\n');
        for (Row r : rows) {
            b.append(r.variant()).append(',').append(AblateGrid.fmt(r.w())).append(',').append(r.exactInverse()).append(',')
                    .append(r.seedsDone()).append(',').append(r.seedsPlanned());
            for (Metric m : METRICS) {
                Spread s = r.metrics().get(m.key());
                for (double v : new double[]{s.mean(), s.sd(), s.min(), s.max()}) b.append(',').append(Double.isNaN(v) ? "" : Double.toString(v));
            }
            b.append('\n');
        }
        return b.toString();
    }

    /** FD per variant (bars: mean over seeds, error bars: sample sd), one series per guidance scale; variants with no graded run left out. */
    static void plot(Path out, List<Row> rows, AblateGrid g) throws IOException {
        List<String> shown = new ArrayList<>();
        for (AblateGrid.Variant v : g.variants)
            if (rows.stream().filter(r -> r.variant().equals(v.name())).allMatch(r -> r.metrics().get("fd_fashionnet").n() > 0)) shown.add(v.name());
        CategoryChart c = new CategoryChartBuilder().width(Math.max(720, 170 * shown.size())).height(360)
                .title(Metrics.FD_NAME + " per variant (mean and sd over seeds; lower is better)").yAxisTitle(Metrics.FD_NAME).build();
        c.getStyler().setLegendVisible(g.guidance.size() > 1);
        c.getStyler().setYAxisDecimalPattern("#,##0.#");
        if (shown.isEmpty()) { // nothing graded yet: an empty chart (xchart draws no axes without a series)
            c.getStyler().setLegendVisible(false);
            c.addSeries("nothing graded yet", List.of("-"), List.of(0));
        }
        for (float w : shown.isEmpty() ? List.<Float>of() : g.guidance) {
            List<Number> mean = new ArrayList<>(), err = new ArrayList<>();
            for (String v : shown)
                for (Row r : rows)
                    if (r.variant().equals(v) && r.w() == w) {
                        Spread s = r.metrics().get("fd_fashionnet");
                        mean.add(s.mean());
                        err.add(Double.isNaN(s.sd()) ? 0 : s.sd());
                    }
            c.addSeries("w=" + AblateGrid.fmt(w), shown, mean, err);
        }
        BitmapEncoder.saveBitmap(c, out.toString(), BitmapEncoder.BitmapFormat.PNG);
    }

    /**
     * Sample quality against what it cost: FD (mean over seeds, sd as error bars) against G's training minutes, one
     * point per trained variant at the first guidance scale, labelled with its sampling time and size; F's exact
     * inverse, which needs no training, is a horizontal line labelled with its own sampling time. Nothing is
     * written (and an old file is removed) when no trained variant is graded yet.
     */
    static void tradeoff(Path out, List<Row> rows, AblateGrid g) throws IOException {
        float w0 = g.guidance.getFirst();
        List<Row> trained = rows.stream().filter(r -> r.w() == w0 && !r.exactInverse()
                && r.metrics().get("fd_fashionnet").n() > 0 && r.metrics().get("train_minutes").n() > 0).toList();
        Files.deleteIfExists(out);
        if (trained.isEmpty()) return;
        XYChart c = new XYChartBuilder().width(820).height(440)
                .title(Metrics.FD_NAME + " against G's training time (w=" + AblateGrid.fmt(w0) + "; lower is better)")
                .xAxisTitle("G training time (minutes, mean over seeds)").yAxisTitle(Metrics.FD_NAME).build();
        c.getStyler().setDefaultSeriesRenderStyle(XYSeries.XYSeriesRenderStyle.Scatter);
        c.getStyler().setMarkerSize(10);
        c.getStyler().setYAxisDecimalPattern("#,##0.#");
        double xmax = 0;
        for (Row r : trained) {
            Spread fd = r.metrics().get("fd_fashionnet"), t = r.metrics().get("train_minutes");
            Spread ms = r.metrics().get("ms_per_image"), p = r.metrics().get("g_params");
            xmax = Math.max(xmax, t.mean());
            String label = r.variant() + " (" + (ms.n() > 0 ? num(ms.mean(), 2) + " ms/img" : "") + (p.n() > 0 ? ", " + params(p.mean()) : "") + ")";
            c.addSeries(label, new double[]{t.mean()}, new double[]{fd.mean()}, new double[]{Double.isNaN(fd.sd()) ? 0 : fd.sd()});
        }
        for (Row r : rows) {
            if (r.w() != w0 || !r.exactInverse() || r.metrics().get("fd_fashionnet").n() == 0) continue;
            double fd = r.metrics().get("fd_fashionnet").mean();
            Spread ms = r.metrics().get("ms_per_image");
            XYSeries line = c.addSeries(r.variant() + ": F's exact inverse (" + (ms.n() > 0 ? num(ms.mean(), 2) + " ms/img" : "") + ")",
                    new double[]{0, xmax * 1.05}, new double[]{fd, fd});
            line.setXYSeriesRenderStyle(XYSeries.XYSeriesRenderStyle.Line);
        }
        BitmapEncoder.saveBitmap(c, out.toString(), BitmapEncoder.BitmapFormat.PNG);
    }

    private static String params(double n) {
        return n >= 1e6 ? String.format(Locale.ROOT, "%.1fM params", n / 1e6) : String.format(Locale.ROOT, "%.0fk params", n / 1e3);
    }
}
