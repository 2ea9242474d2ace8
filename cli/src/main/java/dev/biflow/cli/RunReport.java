// A run folder's pictures and report: loss curves (XChart PNG) and a self-contained report.html.
package dev.biflow.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.knowm.xchart.BitmapEncoder;
import org.knowm.xchart.XYChart;
import org.knowm.xchart.XYChartBuilder;
import org.knowm.xchart.style.markers.SeriesMarkers;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Base64;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Turns a run folder (metrics.jsonl, config.json, PNG grids) into curves.png and report.html.
 * The HTML embeds every image as a data URI, so the file can be mailed or attached alone.
 */
final class RunReport {
    private RunReport() {}

    /** Reads metrics.jsonl: each key's (step, value) series, skipping nulls. */
    static Map<String, List<double[]>> series(Path metrics) throws IOException {
        Map<String, List<double[]>> s = new LinkedHashMap<>();
        if (!Files.exists(metrics)) return s;
        ObjectMapper om = new ObjectMapper();
        for (String line : Files.readAllLines(metrics)) {
            if (line.isBlank()) continue;
            JsonNode n;
            try {
                n = om.readTree(line);
            } catch (IOException e) {
                continue; // a line cut by a kill: the rest of the log is still worth plotting
            }
            if (!n.has("step")) continue;
            double step = n.get("step").asDouble();
            for (var it = n.fields(); it.hasNext(); ) {
                var e = it.next();
                if (e.getKey().equals("step") || !e.getValue().isNumber()) continue;
                s.computeIfAbsent(e.getKey(), k -> new ArrayList<>()).add(new double[]{step, e.getValue().asDouble()});
            }
        }
        return s;
    }

    /** Writes curves.png (training loss, raw and smoothed) into dir; returns its path or null without data. */
    static Path lossCurve(Path dir) throws IOException {
        List<double[]> loss = series(dir.resolve("metrics.jsonl")).get("loss");
        if (loss == null || loss.size() < 2) return null;
        double[] x = new double[loss.size()], y = new double[loss.size()], ys = new double[loss.size()];
        double ema = loss.get(0)[1];
        for (int i = 0; i < x.length; i++) {
            x[i] = loss.get(i)[0];
            y[i] = loss.get(i)[1];
            ema = 0.95 * ema + 0.05 * y[i];
            ys[i] = ema;
        }
        XYChart c = new XYChartBuilder().width(720).height(360).title("training loss (NLL per dim, nats, no constants)")
                .xAxisTitle("step").yAxisTitle("loss").build();
        c.getStyler().setLegendVisible(true);
        c.addSeries("loss", x, y).setMarker(SeriesMarkers.NONE);
        c.addSeries("smoothed", x, ys).setMarker(SeriesMarkers.NONE);
        Path out = dir.resolve("curves.png");
        BitmapEncoder.saveBitmap(c, out.toString(), BitmapEncoder.BitmapFormat.PNG);
        return out;
    }

    /** Writes report.html in dir with the config, the final metrics, every PNG and the command. */
    static Path write(Path dir, String title, String command, Map<String, String> summary) throws IOException {
        return write(dir, title, command, summary, List.of());
    }

    /** As above, plus a results table (first row: the header) shown before the summary. */
    static Path write(Path dir, String title, String command, Map<String, String> summary, List<String[]> table) throws IOException {
        lossCurve(dir);
        StringBuilder h = new StringBuilder();
        h.append("<!doctype html><html><head><meta charset='utf-8'><title>").append(esc(title)).append("</title>")
                .append("<style>body{font-family:sans-serif;max-width:960px;margin:2em auto}td,th{padding:2px 10px;text-align:left}"
                        + "img{max-width:100%;image-rendering:pixelated;border:1px solid #ccc}pre{background:#f4f4f4;padding:8px;overflow:auto}</style>")
                .append("</head><body><h1>").append(esc(title)).append("</h1>");
        h.append("<h2>Command</h2><pre>").append(esc(command)).append("</pre>");
        h.append("<h2>Results</h2>");
        if (!table.isEmpty()) {
            h.append("<table border='1' style='border-collapse:collapse'>");
            for (int r = 0; r < table.size(); r++) {
                h.append("<tr>");
                for (String c : table.get(r)) h.append(r == 0 ? "<th>" : "<td>").append(esc(c)).append(r == 0 ? "</th>" : "</td>");
                h.append("</tr>");
            }
            h.append("</table><p></p>");
        }
        h.append("<table>");
        summary.forEach((k, v) -> h.append("<tr><th>").append(esc(k)).append("</th><td>").append(esc(v)).append("</td></tr>"));
        h.append("</table>");
        try (var files = Files.list(dir)) {
            for (Path p : files.filter(f -> f.toString().endsWith(".png")).sorted().toList()) {
                h.append("<h2>").append(esc(p.getFileName().toString())).append("</h2><img src='data:image/png;base64,")
                        .append(Base64.getEncoder().encodeToString(Files.readAllBytes(p))).append("'>");
            }
        }
        Path cfg = dir.resolve("config.json");
        if (Files.exists(cfg)) h.append("<h2>Resolved config</h2><pre>").append(esc(Files.readString(cfg))).append("</pre>");
        h.append("</body></html>\n");
        Path out = dir.resolve("report.html");
        Files.writeString(out, h);
        return out;
    }

    private static String esc(String s) {
        return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("'", "&#39;");
    }
}
