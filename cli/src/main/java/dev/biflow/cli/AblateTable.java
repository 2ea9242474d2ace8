// The outputs of biflow ablate: results.jsonl, the per-variant table (mean and spread over seeds), fd.png and report.html.
package dev.biflow.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.biflow.flow.metrics.Metrics;
import org.knowm.xchart.BitmapEncoder;
import org.knowm.xchart.CategoryChart;
import org.knowm.xchart.CategoryChartBuilder;

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
    static final String TABLE_MD = "table.md", TABLE_CSV = "table.csv", RESULTS = "results.jsonl", PLOT = "fd.png";
    private static final ObjectMapper JSON = new ObjectMapper();

    /** The metrics of the table: key in grade.json's rows (or the run, for recon_mse), column title, decimals. */
    record Metric(String key, String title, int decimals) {}

    static final List<Metric> METRICS = List.of(new Metric("fd_fashionnet", Metrics.FD_NAME, 2), new Metric("precision", "precision", 3),
            new Metric("recall", "recall", 3), new Metric("class_consistency", "class consistency", 3), new Metric("recon_mse", "recon MSE", 4));

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
                    for (String k : List.of("recon_mse", "recon_images", "steps", "train_seconds", "forward", "model"))
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
                        JsonNode val = m.key().equals("recon_mse") ? gr.get("recon_mse") : row.get(m.key());
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
        Map<String, String> summary = new LinkedHashMap<>();
        summary.put("grid", g.source + (g.description.isEmpty() ? "" : ": " + g.description));
        summary.put("budget per G run", g.budget.describe());
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
        return num(s.mean(), decimals) + (Double.isNaN(s.sd()) ? "" : " ± " + num(s.sd(), decimals));
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

    /** FD per variant (bars: mean over seeds, error bars: sample sd), one series per guidance scale. */
    static void plot(Path out, List<Row> rows, AblateGrid g) throws IOException {
        CategoryChart c = new CategoryChartBuilder().width(720).height(360)
                .title(Metrics.FD_NAME + " per variant (mean and sd over seeds; lower is better)").yAxisTitle(Metrics.FD_NAME).build();
        c.getStyler().setLegendVisible(g.guidance.size() > 1);
        for (float w : g.guidance) {
            List<String> names = new ArrayList<>();
            List<Number> mean = new ArrayList<>(), err = new ArrayList<>();
            for (Row r : rows) {
                if (r.w() != w) continue;
                Spread s = r.metrics().get("fd_fashionnet");
                names.add(r.variant());
                mean.add(s.n() == 0 ? 0 : s.mean());
                err.add(Double.isNaN(s.sd()) ? 0 : s.sd());
            }
            c.addSeries("w=" + AblateGrid.fmt(w), names, mean, err);
        }
        BitmapEncoder.saveBitmap(c, out.toString(), BitmapEncoder.BitmapFormat.PNG);
    }
}
