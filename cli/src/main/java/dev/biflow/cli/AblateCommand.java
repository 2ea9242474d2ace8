// biflow ablate: runs a grid of train-backward variants x seeds against a shared F, grades each like `biflow eval`, tabulates.
package dev.biflow.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.biflow.engine.Tensor;
import dev.biflow.flow.inverse.BackwardCheckpoints;
import dev.biflow.flow.inverse.BackwardConfig;
import dev.biflow.flow.inverse.BackwardTrainer;
import dev.biflow.flow.inverse.BiFlowSampler;
import dev.biflow.flow.inverse.FrozenFlow;
import dev.biflow.flow.data.ImageDataset;
import dev.biflow.flow.metrics.Metrics;
import dev.biflow.flow.model.Checkpoints;
import dev.biflow.flow.model.TarFlow;
import dev.biflow.flow.train.ForwardTrainer;
import dev.biflow.flow.train.RunCheckpoint;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.Callable;

@Command(name = "ablate", mixinStandardHelpOptions = true, showDefaultValues = true, sortOptions = false,
        description = {"Run an ablation grid: one shared forward model F (a checkpoint, or trained here once), then one BiFlow G per",
                "variant and seed (train-backward's options, a step or time budget each), each graded like `biflow eval`",
                "(" + Metrics.FD_NAME + ", precision, recall, class consistency, and G's reconstruction MSE on test images)",
                "from the same noise, labels and evaluation network. Writes table.md, table.csv, results.jsonl, fd.png and",
                "report.html into the ablation folder. Resumable: run the same command again after a kill; finished",
                "runs are skipped, an interrupted G resumes from its checkpoint, unfinished grading reruns.",
                "Grid files: docs/ABLATE.md."},
        footer = {"", "Examples:",
                "  biflow ablate --list",
                "  biflow ablate --grid strategies                 # folder runs/ablate-strategies",
                "  biflow ablate --grid denoise --seeds 5 --steps 3000 --out runs/denoise-long",
                "  biflow ablate --grid my-grid.json --time-limit 20"})
final class AblateCommand implements Callable<Integer> {
    private static final ObjectMapper JSON = new ObjectMapper();
    /** A run's own record in its folder: its settings, and whether its training finished. */
    static final String STATE_FILE = "ablate-run.json";
    /** A run's grades; present (with the current grading settings) = the run is finished. */
    static final String GRADE_FILE = "grade.json";

    @Mixin Common common;
    @picocli.CommandLine.Spec picocli.CommandLine.Model.CommandSpec spec;
    @Option(names = "--grid", paramLabel = "NAME|FILE", description = "A shipped grid (see --list) or a grid file (.json).") String grid;
    @Option(names = "--list", description = "List the shipped grids and exit.") boolean list;
    @Option(names = "--out", paramLabel = "DIR", description = "The ablation folder (default runs/ablate-<grid>).") Path out;
    @Range(min = 1, max = 1000) @Option(names = "--seeds", description = "Seeds per variant (0 .. N-1); default: the grid's (3 unless it says).") Integer seeds;
    @Range(min = 1) @Option(names = "--steps", description = "Steps per G run (the schedule's length); default: the grid's budget.") Long steps;
    @Option(names = "--dry-run", description = "Check the grid and print the plan (what is finished, what would run); run nothing.") boolean dryRun;
    @Range(min = 0, minOpen = true) @Option(names = "--time-limit", paramLabel = "MIN",
            description = "Minutes per G run (stops at a checkpoint; the schedule stays --steps long); default: the grid's budget.") Double timeLimit;

    /** One (variant, seed) of the grid; seed -1 for an exact-inverse variant, which is graded once. */
    record Run(AblateGrid.Variant variant, long seed, Path dir) {
        String label() { return variant.name() + (seed < 0 ? " (exact inverse)" : " seed " + seed); }
    }

    /** A run that failed, and why. */
    record Failure(Run run, String message) {}

    private AblateGrid g;
    private Path dir;
    private final Map<String, Path> forwardModels = new HashMap<>();
    private final Map<String, String> forwardFailures = new HashMap<>();
    private final Map<Path, TarFlow> flows = new HashMap<>();

    @Override
    public Integer call() throws Exception {
        common.apply();
        if (list) {
            for (String n : AblateGrid.SHIPPED) {
                AblateGrid s = AblateGrid.parse(n, "shipped grid '" + n + "'", AblateGrid.shippedText(n));
                System.out.printf(Locale.ROOT, "%-14s %d variants x %d seeds, %s: %s%n", n, s.variants.size(), s.seeds, s.describeBudgets(), s.description);
            }
            return 0;
        }
        if (grid == null)
            throw new IllegalArgumentException("--grid NAME|FILE is required: a shipped grid (" + String.join(", ", AblateGrid.SHIPPED) + ") or a grid file");
        g = AblateGrid.load(grid);
        if (seeds != null) g.seeds = seeds;
        if (steps != null || timeLimit != null)
            g.overrideBudget(steps, timeLimit);
        g.check();
        if (!Files.isRegularFile(g.evalNet))
            throw new IllegalArgumentException(g.source + ": evaluation network " + g.evalNet + " not found: train one with `biflow train-features "
                    + "--arch eval` and name it in the grid's \"eval_net\"");
        // the grading data first: a missing dataset fails here, not after hours of training
        ImageDataset test = ImageDataset.loadIdx(g.data, "test"), train = ImageDataset.loadIdx(g.data, "train");
        dir = out != null ? out : Path.of("runs", "ablate-" + g.name);
        List<Run> runs = plan();
        List<Run> todo = runs.stream().filter(r -> !finished(r)).toList();
        System.out.printf(Locale.ROOT, "ablate: %s, %d variants x %d seeds (%d runs; an exact inverse is graded once), %s per G run; %d finished, %d to do; folder %s%n",
                g.source, g.variants.size(), g.seeds, runs.size(), g.describeBudgets(), runs.size() - todo.size(), todo.size(), dir);
        if (dryRun) {
            for (Run r : runs) System.out.printf(Locale.ROOT, "  %-40s %s%n", r.label(), todo.contains(r) ? "to do" : "finished");
            return 0;
        }
        TrainForwardCommand.createDirectories(dir);
        ConfigFile.write(dir.resolve(ConfigFile.FILE_NAME), g.resolved());
        List<Failure> failures = new ArrayList<>();
        long t0 = System.nanoTime();
        if (!todo.isEmpty()) {
            Metrics metrics = Metrics.load(g.evalNet);
            EvalCommand.checkSampleMemory(g.samples, g.batch, test.channels * test.height * test.width,
                    metrics.net().config.featureDim() + metrics.net().config.numClasses());
            Metrics.Reference ref = metrics.reference(test, train, g.samples, g.evalSeed);
            ConfigFile.write(dir.resolve("floor.json"), (ObjectNode) JSON.valueToTree(ref.report().toMap()));
            int k = 0;
            for (Run r : todo) {
                k++;
                System.out.printf(Locale.ROOT, "ablate: [%d/%d] %s (%s elapsed)%n", k, todo.size(), r.label(), Common.duration((System.nanoTime() - t0) / 1e9));
                try {
                    Path f = forward(r.variant().forward());
                    if (!r.variant().exactInverse()) train(r, f);
                    grade(r, f, metrics, ref, test);
                } catch (RunFailed | IllegalArgumentException | IOException e) {
                    failures.add(new Failure(r, e.getMessage()));
                    System.err.println("ablate: " + r.label() + " failed: " + Main.oneLine(String.valueOf(e.getMessage())));
                }
                // the table so far after every run: a long grid can be read (and is kept) while it runs
                if (k < todo.size()) AblateTable.write(dir, g, runs, EvalCommand.commandLine(spec), failures);
            }
        }
        Path report = AblateTable.write(dir, g, runs, EvalCommand.commandLine(spec), failures);
        System.out.print(Files.readString(dir.resolve(AblateTable.TABLE_MD)));
        System.out.println("ablate: table " + dir.resolve(AblateTable.TABLE_MD) + ", report " + report.toAbsolutePath());
        if (!failures.isEmpty()) {
            StringBuilder b = new StringBuilder();
            for (Failure f : failures) b.append("; ").append(f.run().label()).append(": ").append(f.message());
            throw new IllegalArgumentException(failures.size() + " of " + todo.size() + " runs failed (the table holds the others; run the same "
                    + "command again to retry them, from their checkpoints)" + b);
        }
        return 0;
    }

    /**
     * Every run of the grid in the order they run: seed by seed (the exact inverses first), each seed over the variants
     * in the grid's order, so that a grid stopped early has every variant at its first seeds, not some variants at
     * every seed and others at none.
     */
    private List<Run> plan() {
        List<Run> runs = new ArrayList<>();
        for (int s = -1; s < g.seeds; s++)
            for (AblateGrid.Variant v : g.variants) {
                Path vd = dir.resolve("runs").resolve(v.name());
                if (s < 0 && v.exactInverse()) runs.add(new Run(v, -1, vd.resolve("exact")));
                else if (s >= 0 && !v.exactInverse()) runs.add(new Run(v, s, vd.resolve("seed-" + s)));
            }
        return runs;
    }

    /** A run is finished when its grades exist and were made with the grading settings in force. */
    private boolean finished(Run r) {
        JsonNode grade = readJson(r.dir().resolve(GRADE_FILE));
        // compared as text: numbers read back from a file come as other node types (an int for a long) than those written
        if (grade == null || !grade.has("grading") || !grading(r).toString().equals(grade.get("grading").toString())) return false;
        if (r.variant().exactInverse()) return true;
        JsonNode st = readJson(r.dir().resolve(STATE_FILE)); // a run graded but made with other settings is not this grid's
        return st != null && st.path("trained").asBoolean() && AblateGrid.identity(identity(r)).equals(st.path("settings").asText());
    }

    /** What makes a G run what it is: its options, F as the grid names it, the data, the seed and the step budget. */
    private Map<String, String> identity(Run r) {
        Map<String, String> id = new LinkedHashMap<>(r.variant().options());
        id.put("--forward", r.variant().forward());
        id.put("--data", g.data.toString());
        id.put("--seed", Long.toString(r.seed()));
        id.put("--steps", Long.toString(g.budget(r.variant()).steps()));
        return id;
    }

    /** The grading settings a run's grades must match (what changes the numbers, not the batch). */
    private ObjectNode grading(Run r) {
        ObjectNode o = JSON.createObjectNode();
        o.put("samples", g.samples).put("eval_seed", g.evalSeed).put("eval_net", g.evalNet.toString()).put("data", g.data.toString());
        o.put("forward", r.variant().forward());
        var w = o.putArray("guidance");
        g.guidance.forEach(x -> w.add((double) x));
        return o;
    }

    /** Thrown when a command a run depends on failed (its message is the command's error). */
    static final class RunFailed extends Exception {
        RunFailed(String msg) { super(msg); }
    }

    // ------------------------------------------------------------------ training

    /** The model file of a grid's forward model: the path itself, or the model of the forwards entry, trained here first if needed. */
    private Path forward(String name) throws RunFailed, IOException {
        AblateGrid.ForwardSpec spec = g.forwards.get(name);
        if (spec == null) return Path.of(name);
        Path known = forwardModels.get(name);
        if (known != null) return known;
        if (forwardFailures.containsKey(name)) throw new RunFailed("forward model '" + name + "' failed: " + forwardFailures.get(name));
        Path fd = dir.resolve("forward").resolve(name);
        Map<String, String> settings = new LinkedHashMap<>(spec.options());
        settings.put("--data", g.data.toString());
        try {
            settings.put("--steps", Long.toString(spec.budget().steps()));
            trainRun("train-forward", "forward model '" + name + "'", fd, settings, settings, spec.budget());
        } catch (RunFailed e) {
            forwardFailures.put(name, e.getMessage());
            throw e;
        }
        Path ema = fd.resolve(ForwardTrainer.EMA_FILE);
        Path model = Files.exists(ema) ? ema : fd.resolve(ForwardTrainer.MODEL_FILE);
        forwardModels.put(name, model);
        return model;
    }

    /** Trains (or finishes training) one G run. */
    private void train(Run r, Path forward) throws RunFailed, IOException {
        Map<String, String> settings = identity(r);
        settings.put("--forward", forward.toString());
        trainRun("train-backward", r.label(), r.dir(), settings, identity(r), g.budget(r.variant()));
    }

    /**
     * Runs a train command (its options: settings, --steps included) in folder runDir until its
     * budget is spent, across kills: the run's state file records its identity (the settings that
     * make it what it is) and training time; a run whose training finished is left
     * alone, one with a checkpoint is resumed (--resume, with the time it has left), one without
     * starts again. Settings other than those recorded are an error, not a silent retrain.
     */
    private void trainRun(String command, String label, Path runDir, Map<String, String> settings, Map<String, String> id, AblateGrid.Budget budget)
            throws RunFailed, IOException {
        String identity = AblateGrid.identity(id);
        Path stateFile = runDir.resolve(STATE_FILE);
        JsonNode st = readJson(stateFile);
        if (st != null && !identity.equals(st.path("settings").asText()))
            throw new IllegalArgumentException(runDir + " was made with other settings (" + st.path("settings").asText() + "; now " + identity
                    + "): use another --out, or delete " + runDir + " to redo it");
        if (st != null && st.path("trained").asBoolean()) return;
        boolean checkpoint = Files.exists(runDir.resolve(RunCheckpoint.MANIFEST));
        // without a checkpoint the run starts over, and so does its clock
        double used = st == null || !checkpoint ? 0 : st.path("train_seconds").asDouble() + killedSession(st, runDir);
        if (budget.minutes() > 0 && checkpoint && used >= budget.minutes() * 60) {
            writeState(stateFile, identity, true, used, null);
            return;
        }
        List<String> args = new ArrayList<>(List.of(command));
        if (checkpoint) {
            System.out.printf(Locale.ROOT, "ablate: %s: resuming from its checkpoint (%s trained)%n", label, Common.duration(used));
            args.addAll(List.of("--resume", runDir.toString()));
        } else {
            if (Files.isDirectory(runDir)) clearRun(runDir);
            args.addAll(List.of("--runs", runDir.getParent().toString(), "--name", runDir.getFileName().toString()));
            args.addAll(AblateGrid.args(settings));
        }
        if (budget.minutes() > 0) args.add("--time-limit=" + (budget.minutes() - used / 60));
        if (common.threads != null) args.add("--threads=" + common.threads);
        if (!common.device.equals("cpu")) args.add("--device=" + common.device);
        TrainForwardCommand.createDirectories(runDir);
        long start = System.currentTimeMillis();
        writeState(stateFile, identity, false, used, start);
        Exception[] failure = {null};
        int rc = Main.execute(e -> failure[0] = e, args.toArray(String[]::new));
        common.apply(); // the command reset what this one set (--allow-nonfinite) for the grading that follows
        if (rc != 0)
            throw new RunFailed(command + " failed (exit " + rc + ")" + (failure[0] != null && failure[0].getMessage() != null
                    ? ": " + failure[0].getMessage() : "; see the lines above"));
        writeState(stateFile, identity, true, used + (System.currentTimeMillis() - start) / 1000.0, null);
    }

    /**
     * The training time of a session a kill ended: up to its last checkpoint (later steps are lost
     * and will be redone), i.e. the checkpoint's time minus the session's start; 0 if it made none.
     */
    private static double killedSession(JsonNode st, Path runDir) throws IOException {
        JsonNode started = st.get("session_started_ms");
        Path manifest = runDir.resolve(RunCheckpoint.MANIFEST);
        if (started == null || started.isNull() || !Files.exists(manifest)) return 0;
        long ck = Files.getLastModifiedTime(manifest).toMillis();
        return Math.max(0, (ck - started.asLong()) / 1000.0);
    }

    /** A run killed before its first checkpoint starts over: its partial files go (the folder is the ablation's own). */
    private static void clearRun(Path runDir) throws IOException {
        try (var files = Files.list(runDir)) {
            for (Path p : files.toList()) if (Files.isRegularFile(p) && !p.getFileName().toString().equals(STATE_FILE)) Files.delete(p);
        }
    }

    private static void writeState(Path file, String identity, boolean trained, double seconds, Long sessionStart) throws IOException {
        ObjectNode o = JSON.createObjectNode();
        o.put("settings", identity).put("trained", trained).put("train_seconds", seconds);
        if (sessionStart != null) o.put("session_started_ms", sessionStart);
        ConfigFile.write(file, o);
    }

    static JsonNode readJson(Path file) {
        if (!Files.isRegularFile(file)) return null;
        try {
            JsonNode n = JSON.readTree(file.toFile());
            return n != null && n.isObject() ? n : null;
        } catch (IOException e) {
            return null; // unreadable = not there: the step that writes it runs again
        }
    }

    // ------------------------------------------------------------------ grading

    /** Grades one run as `biflow eval` grades a sampler, at every guidance scale of the grid, and writes its grade.json last. */
    private void grade(Run r, Path forward, Metrics metrics, Metrics.Reference ref, ImageDataset test) throws IOException {
        TarFlow f = flows.get(forward);
        if (f == null) flows.put(forward, f = Checkpoints.loadTarFlow(forward));
        FrozenFlow ff = FrozenFlow.of(f);
        BackwardCheckpoints.Loaded gm = null;
        Path model = null;
        if (!r.variant().exactInverse()) {
            Path ema = r.dir().resolve(BackwardTrainer.EMA_FILE);
            model = Files.exists(ema) ? ema : r.dir().resolve(BackwardTrainer.MODEL_FILE);
            gm = BackwardCheckpoints.read(model);
        }
        float sigma = gm != null ? gm.sigma() : r.variant().sigma();
        int n = g.samples;
        Tensor eps = SamplerEval.noise(f.config, n, g.evalSeed);
        int[] y = SamplerEval.labels(f.config, n);
        ObjectNode o = JSON.createObjectNode();
        o.put("variant", r.variant().name());
        if (r.seed() >= 0) o.put("seed", r.seed());
        else o.putNull("seed");
        o.set("grading", grading(r));
        o.put("forward", forward.toString());
        if (model != null) {
            o.put("model", model.toString());
            o.put("steps", RunCheckpoint.read(r.dir().resolve(RunCheckpoint.MANIFEST)).step());
            JsonNode st = readJson(r.dir().resolve(STATE_FILE));
            if (st != null) o.put("train_seconds", st.path("train_seconds").asDouble());
            o.put("g_params", gm.model().parameterCount());
        }
        var rows = o.putArray("rows");
        for (float w : g.guidance) {
            SamplerEval.Settings s = new SamplerEval.Settings(n, g.batch, w, sigma, g.evalSeed, 0, 10);
            List<Tensor> firstRows = new ArrayList<>();
            SamplerEval.Row row;
            if (gm == null) {
                BiFlowSampler exact = BiFlowSampler.exactInverse(ff, BackwardConfig.Denoise.SCORE, sigma);
                row = SamplerEval.timeAndGrade(r.variant().name() + ", exact inverse, w=" + AblateGrid.fmt(w), SamplerEval.exactNfe(f.config, w),
                        exact, w, eps, y, s, metrics, ref, firstRows);
            } else {
                try (Common.DeviceSampler ds = Common.biflowSampler(ff, gm.model(), sigma, g.batch, w)) {
                    row = SamplerEval.timeAndGrade(r.variant().name() + ", 1-NFE, w=" + AblateGrid.fmt(w), ds.sampler().evaluationsPerSample(w),
                            ds.sampler(), w, eps, y, s, metrics, ref, firstRows);
                }
            }
            ObjectNode ro = rows.addObject();
            ro.put("w", w);
            ro.setAll((ObjectNode) JSON.valueToTree(row.toMap()));
            Files.createDirectories(r.dir());
            SamplerEval.writeGrid(r.dir().resolve("samples-w" + AblateGrid.fmt(w) + ".png"), firstRows, f.config, 10);
        }
        if (gm != null) {
            SamplerEval.Settings s = new SamplerEval.Settings(n, g.batch, 0f, sigma, g.evalSeed, 0, 10);
            int rn = Math.min(n, test.n);
            o.put("recon_mse", SamplerEval.reconstruction(f, gm, test, rn, s, r.dir()));
            o.put("recon_images", rn);
        }
        ConfigFile.write(r.dir().resolve(GRADE_FILE), o); // last, atomically: its presence means the run is finished
    }
}
