// An ablation grid file: a shared forward model F, G's base options, variants that override them, seeds, a budget, grading.
package dev.biflow.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.biflow.flow.inverse.BackwardConfig;
import dev.biflow.flow.data.ImageDataset;
import dev.biflow.flow.features.FeatureNets;
import dev.biflow.flow.model.NormControl;
import picocli.CommandLine;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Model.OptionSpec;

import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;

/**
 * A grid of {@code biflow ablate} (format: docs/ABLATE.md). G's options are {@code biflow
 * train-backward}'s own, by their long names without the dashes ({@code "strategy": "naive"}), and
 * are checked by parsing them with that command's parser, values and ranges included, so the grid
 * cannot drift from the command it drives; a trained F's options are {@code biflow train-forward}'s
 * the same way. Everything is checked before the first run starts. Paths are relative to the working
 * directory, as on the command line.
 */
final class AblateGrid {
    /** The grids shipped as resources, in the order {@code --list} shows them. */
    static final List<String> SHIPPED = List.of("strategies", "denoise", "norm-control", "distance", "guidance", "tradeoff");
    private static final String RESOURCES = "/dev/biflow/cli/grids/";

    /** train-backward options the ablation sets for each run (from the grid's forward, data, seeds and budget). */
    static final Set<String> OWNED_G = Set.of("--forward", "--data", "--runs", "--name", "--resume", "--config", "--seed", "--steps",
            "--time-limit", "--threads", "--device", "--help", "--version");
    /** train-forward options the ablation sets for a forward model it trains. */
    static final Set<String> OWNED_F = Set.of("--data", "--runs", "--name", "--resume", "--config", "--steps", "--time-limit", "--threads",
            "--device", "--help", "--version");
    private static final List<String> FIELDS = List.of("description", "data", "forward", "forwards", "base", "variants", "seeds", "budget",
            "guidance", "samples", "batch", "eval_seed", "eval_net");

    /**
     * What one training run may spend: {@code steps} is the length of the learning-rate schedule and
     * the most steps it takes; {@code minutes} (0 = none) stops it earlier, at a checkpoint.
     */
    record Budget(long steps, double minutes) {
        String describe() {
            return steps + " steps" + (minutes > 0 ? String.format(java.util.Locale.ROOT, " or %s min, whichever comes first", fmt(minutes)) : "");
        }
    }

    /** A forward model the ablation trains itself (once, shared by the variants that name it): train-forward options and a budget. */
    record ForwardSpec(String name, Map<String, String> options, Budget budget) {}

    /**
     * One row of the ablation: its name, the forward model it uses (a path or the name of a
     * {@link ForwardSpec}), train-backward's options (the grid's base with the variant's overrides),
     * whether it is F's exact inverse (strategy exact-inverse: nothing to train), and its own budget (null: the grid's),
     * so that one grid can set G's size against its training time.
     */
    record Variant(String name, String forward, Map<String, String> options, Map<String, String> overrides, boolean exactInverse, float sigma,
                   Budget budget) {}

    final String name;
    /** Where the grid came from, for messages: "shipped grid 'strategies'" or a path. */
    final String source;
    final ObjectNode json;
    final String description;
    final Path data;
    final Map<String, ForwardSpec> forwards;
    final List<Variant> variants;
    final List<Float> guidance;
    final int samples, batch;
    final long evalSeed;
    final Path evalNet;
    int seeds;
    Budget budget;

    private AblateGrid(String name, String source, ObjectNode json) {
        this.name = name;
        this.source = source;
        this.json = json;
        for (var it = json.fieldNames(); it.hasNext(); ) {
            String f = it.next();
            if (!FIELDS.contains(f)) throw error("unknown field '" + f + "'; valid fields: " + String.join(", ", FIELDS));
        }
        description = json.has("description") ? text(json.get("description"), "description") : "";
        data = json.has("data") ? Path.of(text(json.get("data"), "data")) : ImageDataset.FASHION_MNIST_DIR;
        evalNet = json.has("eval_net") ? Path.of(text(json.get("eval_net"), "eval_net")) : DemoCommand.SHIPPED.resolve(FeatureNets.EVAL_FILE);
        seeds = (int) whole(json.get("seeds"), "seeds", 3, 1, 1000);
        samples = (int) whole(json.get("samples"), "samples", 1000, 2, 1_000_000);
        batch = (int) whole(json.get("batch"), "batch", 100, 1, 100_000);
        evalSeed = whole(json.get("eval_seed"), "eval_seed", 1, Long.MIN_VALUE, Long.MAX_VALUE);
        budget = budget(json.get("budget"), "budget");
        guidance = new ArrayList<>();
        JsonNode g = json.get("guidance");
        if (g == null || g.isNull()) guidance.add(0f);
        else {
            if (!g.isArray() || g.isEmpty()) throw error("'guidance' must be a non-empty list of guidance scales, e.g. [0] or [0, 1, 2]; got " + g);
            for (int i = 0; i < g.size(); i++) {
                JsonNode w = g.get(i);
                if (!w.isNumber() || !(w.asDouble() >= 0) || !Double.isFinite(w.asDouble()))
                    throw error("'guidance[" + i + "]' must be a finite number >= 0, got " + w);
                if (guidance.contains(w.floatValue())) throw error("'guidance' lists " + w + " twice");
                guidance.add(w.floatValue());
            }
        }
        forwards = new LinkedHashMap<>();
        JsonNode fs = json.get("forwards");
        if (fs != null && !fs.isNull()) {
            if (!fs.isObject()) throw error("'forwards' must be an object of named forward-model specs, e.g. {\"clip\": {\"options\": {...}, \"budget\": {\"steps\": 5000}}}");
            for (var it = fs.properties().iterator(); it.hasNext(); ) {
                var e = it.next();
                String field = "forwards." + e.getKey();
                checkName(e.getKey(), field);
                JsonNode spec = e.getValue();
                if (!spec.isObject()) throw error("'" + field + "' must be an object with \"options\" (train-forward options) and \"budget\"");
                for (var f = spec.fieldNames(); f.hasNext(); ) {
                    String k = f.next();
                    if (!k.equals("options") && !k.equals("budget")) throw error("unknown field '" + field + "." + k + "'; valid: options, budget");
                }
                if (spec.get("budget") == null) throw error("'" + field + ".budget' is required, e.g. {\"steps\": 5000} or {\"steps\": 5000, \"minutes\": 15}");
                forwards.put(e.getKey(), new ForwardSpec(e.getKey(), options(spec.get("options"), field + ".options"), budget(spec.get("budget"), field + ".budget")));
            }
        }
        String forward = json.has("forward") ? text(json.get("forward"), "forward") : null;
        Map<String, String> base = options(json.get("base"), "base");
        JsonNode vs = json.get("variants");
        if (vs == null || !vs.isArray() || vs.isEmpty())
            throw error("'variants' must be a non-empty list of {\"name\": ..., \"options\": {...}}" + (vs == null ? " (it is missing)" : ", got " + vs));
        variants = new ArrayList<>();
        Set<String> names = new LinkedHashSet<>();
        for (int i = 0; i < vs.size(); i++) {
            String field = "variants[" + i + "]";
            JsonNode v = vs.get(i);
            if (!v.isObject()) throw error("'" + field + "' must be an object {\"name\": ..., \"options\": {...}}, got " + v);
            for (var f = v.fieldNames(); f.hasNext(); ) {
                String k = f.next();
                if (!List.of("name", "forward", "options", "budget").contains(k))
                    throw error("unknown field '" + field + "." + k + "'; valid: name, forward, options, budget");
            }
            if (v.get("name") == null) throw error("'" + field + ".name' is required");
            String vn = text(v.get("name"), field + ".name");
            checkName(vn, field + ".name");
            if (!names.add(vn)) throw error("two variants are named '" + vn + "'");
            String vf = v.has("forward") ? text(v.get("forward"), field + ".forward") : forward;
            if (vf == null)
                throw error("'forward' is missing: name the shared forward model F at the top (a checkpoint path, or an entry of \"forwards\"), "
                        + "or one per variant");
            Map<String, String> overrides = options(v.get("options"), field + ".options");
            Map<String, String> merged = new LinkedHashMap<>(base);
            merged.putAll(overrides);
            Budget vb = v.has("budget") ? budget(v.get("budget"), field + ".budget") : null;
            variants.add(new Variant(vn, vf, merged, overrides, false, 0f, vb));
        }
    }

    /** The grid named by --grid: a shipped name, or a file. */
    static AblateGrid load(String grid) throws IOException {
        if (SHIPPED.contains(grid)) return parse(grid, "shipped grid '" + grid + "'", shippedText(grid));
        Path p = Path.of(grid);
        if (!grid.endsWith(".json") && !Files.exists(p))
            throw new IllegalArgumentException("unknown grid '" + grid + "': the shipped grids are " + String.join(", ", SHIPPED)
                    + " (biflow ablate --list); or pass a grid file (.json, format in docs/ABLATE.md)");
        String text;
        try {
            text = Files.readString(p);
        } catch (NoSuchFileException e) {
            throw new IllegalArgumentException("grid file " + p + " does not exist; the shipped grids are " + String.join(", ", SHIPPED));
        }
        String n = p.getFileName().toString();
        return parse(n.endsWith(".json") ? n.substring(0, n.length() - 5) : n, "grid file " + p, text);
    }

    static String shippedText(String name) throws IOException {
        try (InputStream in = AblateGrid.class.getResourceAsStream(RESOURCES + name + ".json")) {
            if (in == null) throw new IllegalStateException("shipped grid " + name + " is missing from the jar");
            return new String(in.readAllBytes(), java.nio.charset.StandardCharsets.UTF_8);
        }
    }

    static AblateGrid parse(String name, String source, String text) {
        JsonNode n = ConfigFile.parseJson(text, source);
        if (n == null || !n.isObject()) throw new IllegalArgumentException(source + " must hold a JSON object (format: docs/ABLATE.md)");
        return new AblateGrid(name, source, (ObjectNode) n);
    }

    // ------------------------------------------------------------------ checks against the commands

    /**
     * Checks every variant's and every trained F's options with the parser of the command that will
     * run them (names, types, ranges, enum values) and that every forward model exists or is trained
     * here; fills in each variant's exact-inverse flag and training noise. Nothing has run yet.
     */
    void check() {
        checkOptions();
        checkForwards();
    }

    /** The options half of {@link #check}: every option parses as its command would parse it. */
    void checkOptions() {
        for (ForwardSpec f : forwards.values()) {
            TrainForwardCommand c = new TrainForwardCommand();
            parse(c, f.options(), OWNED_F, "forwards." + f.name() + ".options", "train-forward", "budget or the grid's data");
            wrap("forwards." + f.name() + ".options", () -> NormControl.parse(c.normControl));
        }
        for (int i = 0; i < variants.size(); i++) {
            Variant v = variants.get(i);
            String field = "variants[" + i + "] (" + v.name() + ")";
            TrainBackwardCommand c = new TrainBackwardCommand();
            parse(c, v.options(), OWNED_G, field + " with the base options", "train-backward", "forward, seeds, budget or the grid's data");
            BackwardConfig.Strategy s = wrap(field, () -> BackwardConfig.Strategy.parse(c.strategy));
            wrap(field, () -> BackwardConfig.Denoise.parse(c.denoise));
            wrap(field, () -> BackwardConfig.AlignNorm.parse(c.alignNorm));
            wrap(field, () -> BackwardConfig.Head.parse(c.head));
            if (c.cfg != null) wrap(field, () -> BackwardConfig.Cfg.parse(c.cfg));
            String p = c.perceptual.toLowerCase(java.util.Locale.ROOT);
            if (!List.of("none", "lpips", "lpips+convnext").contains(p))
                throw error(field + ": --perceptual: expected none, lpips or lpips+convnext, got '" + c.perceptual + "'");
            variants.set(i, new Variant(v.name(), v.forward(), v.options(), v.overrides(), s == BackwardConfig.Strategy.EXACT_INVERSE, c.sigma, v.budget()));
        }
    }

    /** The forward-model half of {@link #check}: every F a variant names is a file or an entry of "forwards". */
    void checkForwards() {
        Map<String, List<String>> missing = new LinkedHashMap<>();
        for (Variant v : variants) {
            if (!forwards.containsKey(v.forward()) && !Files.isRegularFile(Path.of(v.forward())))
                missing.computeIfAbsent(v.forward(), k -> new ArrayList<>()).add(v.name());
        }
        if (!missing.isEmpty()) {
            var e = missing.entrySet().iterator().next();
            throw error("forward model '" + e.getKey() + "' (variants " + String.join(", ", e.getValue()) + ") is neither a file nor an entry of "
                    + "\"forwards\"" + (forwards.isEmpty() ? "" : " (" + String.join(", ", forwards.keySet()) + ")")
                    + ": train one with `biflow train-forward` and name its model file (e.g. runs/forward/model-ema.safetensors), "
                    + "or add a forwards entry the ablation trains");
        }
    }

    /** Parses options as the command would (its own parser and range checks); errors name the grid field and the valid options. */
    private void parse(Object command, Map<String, String> options, Set<String> owned, String field, String commandName, String ownedBy) {
        CommandLine cl = new CommandLine(command);
        cl.setExpandAtFiles(false);
        CommandSpec spec = cl.getCommandSpec();
        for (String k : options.keySet()) {
            OptionSpec o = spec.findOption(k);
            if (o == null || !o.longestName().equals(k))
                throw error(field + ": unknown " + commandName + " option '" + k.substring(2) + "'; valid options: " + String.join(", ", validOptions(spec, owned)));
            if (owned.contains(k))
                throw error(field + ": option '" + k.substring(2) + "' is set by the ablation (from the grid's " + ownedBy + "), not per variant");
        }
        try {
            cl.parseArgs(args(options).toArray(String[]::new));
        } catch (CommandLine.ParameterException e) {
            throw error(field + ": " + e.getMessage());
        }
        String problem = OptionCheck.check(spec);
        if (problem != null) throw error(field + ": " + problem);
    }

    /** The options of a command a grid may set, without the dashes. */
    static List<String> validOptions(CommandSpec spec, Set<String> owned) {
        List<String> names = new ArrayList<>();
        for (OptionSpec o : spec.options())
            if (!owned.contains(o.longestName()) && o.longestName().startsWith("--")) names.add(o.longestName().substring(2));
        return names;
    }

    /** Options as command-line arguments, "--name=value" (so a boolean flag takes its value too). */
    static List<String> args(Map<String, String> options) {
        List<String> a = new ArrayList<>();
        options.forEach((k, v) -> a.add(k + "=" + v));
        return a;
    }

    private <T> T wrap(String field, java.util.function.Supplier<T> check) {
        try {
            return check.get();
        } catch (IllegalArgumentException e) {
            throw error(field + ": " + e.getMessage());
        }
    }

    // ------------------------------------------------------------------ JSON helpers

    private IllegalArgumentException error(String msg) { return new IllegalArgumentException(source + ": " + msg); }

    private String text(JsonNode v, String field) {
        if (v == null || !v.isTextual() || v.textValue().isBlank()) throw error("'" + field + "' must be a non-empty string, got " + v);
        return v.textValue();
    }

    private long whole(JsonNode v, String field, long dflt, long min, long max) {
        if (v == null || v.isNull()) return dflt;
        if (!v.isIntegralNumber() || !v.canConvertToLong() || v.asLong() < min || v.asLong() > max)
            throw error("'" + field + "' must be a whole number" + (min > Long.MIN_VALUE ? " in [" + min + ", " + max + "]" : "") + ", got " + v);
        return v.asLong();
    }

    private Budget budget(JsonNode v, String field) {
        if (v == null || v.isNull()) return new Budget(2000, 0);
        if (!v.isObject()) throw error("'" + field + "' must be an object like {\"steps\": 2000} or {\"steps\": 2000, \"minutes\": 20}, got " + v);
        for (var f = v.fieldNames(); f.hasNext(); ) {
            String k = f.next();
            if (!k.equals("steps") && !k.equals("minutes")) throw error("unknown field '" + field + "." + k + "'; valid: steps, minutes");
        }
        long steps = whole(v.get("steps"), field + ".steps", 2000, 1, Long.MAX_VALUE / 2);
        JsonNode m = v.get("minutes");
        double minutes = 0;
        if (m != null && !m.isNull()) {
            if (!m.isNumber() || !(m.asDouble() > 0) || !Double.isFinite(m.asDouble()))
                throw error("'" + field + ".minutes' must be a number of minutes > 0, got " + m);
            minutes = m.asDouble();
        }
        return new Budget(steps, minutes);
    }

    /** The grid's budget per G run, and the variants that have their own. */
    String describeBudgets() {
        List<String> own = new ArrayList<>();
        for (Variant v : variants) if (v.budget() != null) own.add(v.name() + " " + v.budget().describe());
        return budget.describe() + (own.isEmpty() ? "" : "; own budgets: " + String.join(", ", own));
    }

    /** The budget of a variant's G runs: its own, or the grid's. */
    Budget budget(Variant v) { return v.budget() != null ? v.budget() : budget; }

    /**
     * Command-line --steps / --time-limit: they set the budget of every G run, the variants' own budgets included
     * (a null leaves that part as the grid and its variants say).
     */
    void overrideBudget(Long steps, Double minutes) {
        if (steps == null && minutes == null) return;
        budget = new Budget(steps != null ? steps : budget.steps(), minutes != null ? minutes : budget.minutes());
        for (int i = 0; i < variants.size(); i++) {
            Variant v = variants.get(i);
            if (v.budget() == null) continue;
            Budget b = new Budget(steps != null ? steps : v.budget().steps(), minutes != null ? minutes : v.budget().minutes());
            variants.set(i, new Variant(v.name(), v.forward(), v.options(), v.overrides(), v.exactInverse(), v.sigma(), b));
        }
    }

    /** An options object as "--name" to the value's text (null values left out: they mean the command's default). */
    private Map<String, String> options(JsonNode v, String field) {
        Map<String, String> out = new LinkedHashMap<>();
        if (v == null || v.isNull()) return out;
        if (!v.isObject()) throw error("'" + field + "' must be an object of options, e.g. {\"strategy\": \"naive\", \"width\": 128}, got " + v);
        for (var it = v.properties().iterator(); it.hasNext(); ) {
            var e = it.next();
            String k = e.getKey().startsWith("--") ? e.getKey() : "--" + e.getKey();
            JsonNode val = e.getValue();
            if (val.isNull()) continue;
            if (val.isContainerNode()) throw error("'" + field + "." + e.getKey() + "' must be a single value, not " + (val.isArray() ? "a list" : "an object"));
            out.put(k, val.asText());
        }
        return out;
    }

    private void checkName(String n, String field) {
        if (!n.matches("[A-Za-z0-9][A-Za-z0-9._+-]{0,63}"))
            throw error("'" + field + "' is '" + n + "': a name is a folder name, letters, digits and . _ + - (at most 64)");
    }

    static String fmt(double d) { return d == Math.rint(d) && Math.abs(d) < 1e15 ? Long.toString((long) d) : Double.toString(d); }

    /** The grid as this run uses it (after command-line overrides), for the ablation folder's config.json. */
    ObjectNode resolved() {
        ObjectNode o = json.deepCopy();
        o.put("seeds", seeds);
        ObjectNode b = o.putObject("budget");
        b.put("steps", budget.steps());
        if (budget.minutes() > 0) b.put("minutes", budget.minutes());
        var vs = (com.fasterxml.jackson.databind.node.ArrayNode) o.get("variants");
        for (int i = 0; i < variants.size(); i++) {
            Budget vb = variants.get(i).budget();
            if (vb == null) continue;
            ObjectNode b2 = ((ObjectNode) vs.get(i)).putObject("budget");
            b2.put("steps", vb.steps());
            if (vb.minutes() > 0) b2.put("minutes", vb.minutes());
        }
        o.put("data", data.toString());
        o.put("eval_net", evalNet.toString());
        o.put("samples", samples);
        o.put("batch", batch);
        o.put("eval_seed", evalSeed);
        var g = o.putArray("guidance");
        guidance.forEach(w -> g.add(w));
        return o;
    }

    /** A canonical, order-free form of a run's settings, to tell a finished run made with other settings. */
    static String identity(Map<String, String> settings) { return new TreeMap<>(settings).toString(); }
}
