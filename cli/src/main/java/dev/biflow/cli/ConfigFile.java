// JSON configuration of the train commands: a run's config.json (or a file in its format) read back as option defaults.
package dev.biflow.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import picocli.CommandLine;
import picocli.CommandLine.Model.ArgSpec;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Model.OptionSpec;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.function.Function;
import java.util.function.UnaryOperator;

/**
 * The settings file of a train command, in exactly the format the command writes as
 * {@code runs/<name>/config.json}, used as picocli's {@link CommandLine.IDefaultValueProvider}:
 * every key of the file is the default of one option, so the precedence is flags &gt; file &gt;
 * built-in defaults, and {@code --help} prints the defaults in force (the file's where it has them).
 *
 * <p>Two sources: {@code --config FILE} (any run's config.json, or a hand-written subset of one),
 * and {@code --resume DIR}, whose {@code DIR/config.json} then holds the run's settings; there an
 * explicit flag that changes a saved setting is an error ({@link #checkResume}), except the
 * run-time options a command names. {@link #install} finds either option by scanning the raw
 * arguments before picocli parses them (the provider has to be in place by then).
 *
 * <p>Keys are dotted paths into nested objects ({@code train.lr}); an unknown key is an error that
 * names it and lists the valid ones; {@code null} means "no value" (the built-in default). A
 * derived key (the image geometry, copied from the data or the forward model) maps to no option:
 * the command checks it with {@link #expect}.
 */
final class ConfigFile implements CommandLine.IDefaultValueProvider {
    /** The name of the settings file in a run folder. */
    static final String FILE_NAME = "config.json";

    private static final ObjectMapper JSON = new ObjectMapper();

    /** A command whose options can come from a config file: {@code --config} and, where it has it, {@code --resume}. */
    interface Configurable {
        /** The keys of the command's file, mapped to its options. */
        Schema configSchema();
    }

    /**
     * One key of the file.
     *
     * @param path     dotted path, e.g. {@code train.lr}
     * @param option   the option it sets (its longest name), or null for a derived key the command checks itself
     * @param toOption the option's value (as picocli parses it) for the key's JSON value
     * @param canon    canonical form of a string value, for comparing a flag with a saved value ("tanh" = "soft")
     */
    record Key(String path, String option, Function<JsonNode, String> toOption, UnaryOperator<String> canon) {}

    /** The keys of one command's file, in file order. */
    static final class Schema {
        private final Map<String, Key> keys = new LinkedHashMap<>();

        /** A key whose value is the option's value. */
        Schema option(String path, String option) { return option(path, option, UnaryOperator.identity()); }

        /** A key whose value is the option's value, with a canonical form for comparisons (an enum's parser). */
        Schema option(String path, String option, UnaryOperator<String> canon) {
            return add(new Key(path, option, ConfigFile::text, canon));
        }

        /** A key whose value is translated for its option (e.g. num_classes 0 to --unconditional true). */
        Schema mapped(String path, String option, Function<JsonNode, String> toOption) {
            return add(new Key(path, option, toOption, UnaryOperator.identity()));
        }

        /**
         * The train.* keys: {@link dev.biflow.flow.train.TrainConfig}'s fields and the flags that set
         * them, one list for every command that trains with it, so their config.json files agree.
         */
        Schema trainConfig() {
            return option("train.steps", "--steps").option("train.batchSize", "--batch").option("train.lr", "--lr")
                    .option("train.warmupSteps", "--warmup").option("train.minLr", "--min-lr").option("train.weightDecay", "--weight-decay")
                    .option("train.beta1", "--beta1").option("train.beta2", "--beta2").option("train.gradClip", "--grad-clip")
                    .option("train.emaDecay", "--ema").option("train.sigma", "--sigma").option("train.labelDropout", "--label-dropout")
                    .option("train.seed", "--seed").option("train.checkpointEvery", "--checkpoint-every").option("train.maxBadSteps", "--max-bad-steps");
        }

        /** A key that is derived (from the data or another model): allowed in the file, checked by the command. */
        Schema derived(String path) { return add(new Key(path, null, ConfigFile::text, UnaryOperator.identity())); }

        private Schema add(Key k) {
            keys.put(k.path(), k);
            return this;
        }

        Key key(String path) { return keys.get(path); }

        Key keyForOption(String option) {
            for (Key k : keys.values()) if (option.equals(k.option())) return k;
            return null;
        }

        /** Whether path names an object that holds keys ("train" for "train.lr"). */
        boolean isSection(String path) {
            for (String k : keys.keySet()) if (k.startsWith(path + ".")) return true;
            return false;
        }

        /** "model.{in_channels, img_size}, train.{steps, lr}, data". */
        String describe() {
            Map<String, List<String>> groups = new LinkedHashMap<>();
            for (String k : keys.keySet()) {
                int dot = k.lastIndexOf('.');
                groups.computeIfAbsent(dot < 0 ? "" : k.substring(0, dot), g -> new ArrayList<>()).add(k.substring(dot + 1));
            }
            List<String> parts = new ArrayList<>();
            for (var g : groups.entrySet())
                parts.add(g.getKey().isEmpty() ? String.join(", ", g.getValue()) : g.getKey() + ".{" + String.join(", ", g.getValue()) + "}");
            return String.join("; ", parts);
        }
    }

    final Path file;
    /** True when the file is the config.json of a run being resumed. */
    final boolean resumed;
    private final Schema schema;
    private final ObjectNode root;
    /** Key path to its JSON value, for every key the file sets (not null). */
    private final Map<String, JsonNode> values = new LinkedHashMap<>();
    /** Option name to the value the file gives it. */
    private final Map<String, String> byOption = new LinkedHashMap<>();

    private ConfigFile(Path file, boolean resumed, Schema schema, ObjectNode root) {
        this.file = file;
        this.resumed = resumed;
        this.schema = schema;
        this.root = root;
        collect(root, "");
        for (var e : values.entrySet()) {
            Key k = schema.key(e.getKey());
            if (k.option() != null) byOption.put(k.option(), k.toOption().apply(e.getValue()));
        }
    }

    /** Reads and checks a settings file: valid JSON, an object, every key known. */
    static ConfigFile read(Path file, Schema schema, boolean resumed) throws IOException {
        String text;
        try {
            text = Files.readString(file);
        } catch (NoSuchFileException e) {
            throw new IOException(resumed
                    ? "cannot resume from " + file.getParent() + ": it has no " + FILE_NAME + " (every run writes one when it starts); check the folder"
                    : "config file " + file + " does not exist; pass a run's config.json, e.g. --config runs/<name>/config.json");
        }
        JsonNode n = parseJson(text, file.toString());
        if (n == null || !n.isObject())
            throw new IllegalArgumentException(file + " must hold a JSON object like the config.json of a run; valid keys: " + schema.describe());
        return new ConfigFile(file, resumed, schema, (ObjectNode) n);
    }

    /** Parses JSON text; a syntax error is an IllegalArgumentException naming the source and the line. */
    static JsonNode parseJson(String text, String source) {
        try {
            return JSON.readTree(text);
        } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
            throw new IllegalArgumentException(source + " is not valid JSON: " + e.getOriginalMessage()
                    + (e.getLocation() != null ? " (line " + e.getLocation().getLineNr() + ")" : ""));
        }
    }

    private void collect(JsonNode obj, String prefix) {
        for (var it = obj.properties().iterator(); it.hasNext(); ) {
            var e = it.next();
            String path = prefix + e.getKey();
            JsonNode v = e.getValue();
            if (schema.key(path) != null) {
                if (v.isContainerNode())
                    throw new IllegalArgumentException(file + ": key '" + path + "' must be a single value, not " + (v.isArray() ? "a list" : "an object"));
                if (!v.isNull()) values.put(path, v);
            } else if (schema.isSection(path)) {
                if (!v.isObject()) throw new IllegalArgumentException(file + ": '" + path + "' must be an object of settings, got " + v);
                collect(v, path + ".");
            } else {
                throw new IllegalArgumentException(file + ": unknown key '" + path + "'; valid keys: " + schema.describe());
            }
        }
    }

    private static String text(JsonNode v) { return v.isTextual() ? v.textValue() : v.asText(); }

    @Override
    public String defaultValue(ArgSpec arg) {
        return arg instanceof OptionSpec o ? byOption.get(o.longestName()) : null;
    }

    /** Whether the file sets this key. */
    boolean has(String path) { return values.containsKey(path); }

    /** The file's value of a key, or null. */
    JsonNode value(String path) { return values.get(path); }

    /**
     * Checks a derived key against the value it must have: a file made for other data or another
     * forward model fails here with both values named.
     */
    void expect(String path, long actual, String source) {
        JsonNode v = values.get(path);
        if (v != null && !(v.canConvertToLong() && v.asLong() == actual))
            throw new IllegalArgumentException(file + ": " + path + " is " + v + " but " + source + " gives " + actual
                    + "; this value is not a setting (it follows " + source + "): remove it from the file or use matching " + source);
    }

    /**
     * For a resumed run: fails on the first option given explicitly on the command line whose value
     * differs from the run's saved setting, unless it is one of runTime (options that may change
     * between sessions of a run). Nothing has been written when this fails.
     */
    void checkResume(CommandSpec spec, Set<String> runTime, String command) {
        List<String> flags = new ArrayList<>(), savedValues = new ArrayList<>(), names = new ArrayList<>();
        for (OptionSpec o : spec.commandLine().getParseResult().matchedOptions()) {
            String name = o.longestName();
            String saved = byOption.get(name);
            if (runTime.contains(name) || saved == null) continue;
            Key k = schema.keyForOption(name);
            if (same(o.getValue(), saved, o.type(), k.canon())) continue;
            List<String> typed = o.originalStringValues();
            flags.add(name + (typed.isEmpty() ? "" : " " + typed.get(typed.size() - 1)));
            names.add(name);
            savedValues.add(k.path() + " = " + values.get(k.path()));
        }
        if (flags.isEmpty()) return;
        String given = String.join(" ", flags);
        throw new IllegalArgumentException(given + " would change the resumed run: " + file + " has "
                + String.join(", ", savedValues) + ". A resumed run keeps its settings (only " + String.join(", ", runTime)
                + " may change); drop " + String.join(" and ", names) + ", or start a new run from these settings: biflow " + command
                + " --config " + file + " --name <new-name> " + given);
    }

    /** Whether an option's parsed value equals a saved one (numbers compared in the option's type). */
    static boolean same(Object v, String saved, Class<?> type, UnaryOperator<String> canon) {
        if (v == null) return false;
        try {
            if (type == float.class || type == Float.class) return Float.compare(((Number) v).floatValue(), Float.parseFloat(saved)) == 0;
            if (type == double.class || type == Double.class) return Double.compare(((Number) v).doubleValue(), Double.parseDouble(saved)) == 0;
            if (type == int.class || type == Integer.class || type == long.class || type == Long.class)
                return ((Number) v).longValue() == new java.math.BigDecimal(saved).longValueExact();
            if (type == boolean.class || type == Boolean.class) return v.equals(Boolean.parseBoolean(saved));
            if (v instanceof Path p) return p.toAbsolutePath().normalize().equals(Path.of(saved).toAbsolutePath().normalize());
            return canon.apply(v.toString()).equals(canon.apply(saved));
        } catch (RuntimeException e) { // an unparsable saved value, or an enum name a parser rejects
            return false;
        }
    }

    /**
     * Sets keys of the file to new values and writes it back (other keys, and their order, stay
     * as they are); for the run-time settings a resumed run may change, such as train.steps.
     * Returns "train.steps 2500 -> 3000" for each key that changed; writes nothing when none did.
     */
    List<String> update(Map<String, Object> changes) throws IOException {
        List<String> changed = new ArrayList<>();
        for (var e : changes.entrySet()) {
            JsonNode before = values.get(e.getKey());
            JsonNode after = JSON.valueToTree(e.getValue());
            if (before != null && before.asText().equals(after.asText())) continue;
            String[] parts = e.getKey().split("\\.");
            ObjectNode o = root;
            for (int i = 0; i < parts.length - 1; i++) o = o.has(parts[i]) ? (ObjectNode) o.get(parts[i]) : o.putObject(parts[i]);
            o.set(parts[parts.length - 1], after);
            values.put(e.getKey(), after);
            changed.add(e.getKey() + " " + (before == null ? "(unset)" : before) + " -> " + after);
        }
        if (!changed.isEmpty()) write(file, root);
        return changed;
    }

    /**
     * Writes a run's settings file (pretty-printed, as read back by {@link #read}) atomically: a
     * reader (or a kill) sees the old file or the new one, never a part.
     */
    static void write(Path file, ObjectNode settings) throws IOException {
        byte[] bytes = (JSON.writerWithDefaultPrettyPrinter().writeValueAsString(settings) + "\n").getBytes(java.nio.charset.StandardCharsets.UTF_8);
        try {
            dev.biflow.engine.io.AtomicWrite.write(file, out -> out.write(bytes));
        } catch (IOException e) {
            throw new IOException("cannot write " + file + ": " + reason(e), e);
        }
    }

    /** The reason of a file-system error in words ("No space left on device"), without the stack of names Java adds. */
    static String reason(IOException e) {
        if (e instanceof java.nio.file.NoSuchFileException) return "no such file or directory" + (e.getMessage() != null ? " (" + e.getMessage() + ")" : "");
        if (e instanceof java.nio.file.AccessDeniedException) return "permission denied" + (e.getMessage() != null ? " (" + e.getMessage() + ")" : "");
        if (e instanceof java.nio.file.FileAlreadyExistsException) return "a file is in the way (" + e.getMessage() + ")";
        if (e instanceof java.nio.file.FileSystemException f && f.getReason() != null) return f.getReason();
        return e.getMessage() != null ? e.getMessage() : e.getClass().getSimpleName();
    }

    static ObjectMapper json() { return JSON; }

    /**
     * Finds {@code --config FILE} or {@code --resume DIR} among the arguments of a configurable
     * subcommand and installs the file as that subcommand's default-value provider. A bad file
     * (missing, not JSON, an unknown key) prints one line and returns exit code 2; otherwise 0.
     */
    static int install(CommandLine root, String[] args) {
        int i = 0;
        while (i < args.length && args[i].startsWith("-")) i++;
        if (i == args.length) return 0;
        CommandLine sub = root.getSubcommands().get(args[i]);
        if (sub == null || !(sub.getCommand() instanceof Configurable c)) return 0;
        boolean canResume = sub.getCommandSpec().findOption("--resume") != null;
        String config = null, resume = null;
        for (int j = i + 1; j < args.length; j++) {
            String a = args[j];
            if (a.equals("--")) break;
            if (a.equals("--config") && j + 1 < args.length) config = args[++j];
            else if (a.startsWith("--config=")) config = a.substring("--config=".length());
            else if (canResume && a.equals("--resume") && j + 1 < args.length) resume = args[++j];
            else if (canResume && a.startsWith("--resume=")) resume = a.substring("--resume=".length());
        }
        try {
            if (config != null && resume != null)
                throw new IllegalArgumentException("--config and --resume cannot be combined: a resumed run keeps the settings in "
                        + Path.of(resume).resolve(FILE_NAME) + "; to start a new run from them use --config " + Path.of(resume).resolve(FILE_NAME) + " --name <new-name>");
            if (config != null) sub.setDefaultValueProvider(read(Path.of(config), c.configSchema(), false));
            else if (resume != null) sub.setDefaultValueProvider(read(Path.of(resume).resolve(FILE_NAME), c.configSchema(), true));
            return 0;
        } catch (IllegalArgumentException | IOException e) {
            sub.getErr().println("biflow " + sub.getCommandName() + ": error: " + Main.oneLine(e.getMessage()));
            sub.getErr().flush();
            return 2;
        }
    }

    /** The file installed on a command, or null. */
    static ConfigFile of(CommandSpec spec) {
        return spec.defaultValueProvider() instanceof ConfigFile f ? f : null;
    }

    /**
     * The file installed on a train command (null without --config or --resume). When resuming, the
     * run's own config.json must be the one installed, and the command line may change only the
     * runTime options ({@link #checkResume}); both train commands start this way.
     */
    static ConfigFile forRun(CommandSpec spec, boolean resuming, Set<String> runTime, String command) {
        ConfigFile file = of(spec);
        if (resuming) {
            if (file == null || !file.resumed) throw new IllegalStateException("--resume needs the run's settings; run through Main.execute");
            file.checkResume(spec, runTime, command);
        }
        return file;
    }

    /**
     * On --resume, once the resume succeeded: writes into the run's config.json (atomically) the
     * saved training settings a resume may change (steps, checkpoint interval, and the command's
     * own {@code more}, e.g. eval_images), says so, and warns when a new step count stretches the
     * cosine schedule. Every other setting was checked equal by {@link #checkResume}.
     */
    void recordRunTimeChanges(dev.biflow.flow.train.TrainConfig tc, String command, Map<String, Object> more) throws IOException {
        JsonNode savedSteps = value("train.steps");
        var changes = new LinkedHashMap<String, Object>();
        changes.put("train.steps", tc.steps());
        changes.put("train.checkpointEvery", tc.checkpointEvery());
        changes.putAll(more);
        List<String> changed = update(changes);
        if (!changed.isEmpty()) System.out.println(command + ": " + file + " updated: " + String.join(", ", changed));
        if (savedSteps != null && savedSteps.asLong() != tc.steps())
            System.out.printf(java.util.Locale.ROOT, "%s: --steps %d changes the run's length from %d steps: the cosine learning-rate schedule is "
                    + "stretched to %d steps, so from here on the rate differs from the original run's%n", command, tc.steps(), savedSteps.asLong(), tc.steps());
    }
}
