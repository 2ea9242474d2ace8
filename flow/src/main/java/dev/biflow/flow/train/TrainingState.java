// The resumable training state beside a model file (optimizer, EMA, RNG, data position), one format for both trainers.
package dev.biflow.flow.train;

import dev.biflow.engine.Rng;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.io.Safetensors;
import dev.biflow.engine.optim.AdamW;
import dev.biflow.engine.optim.Ema;

import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.Supplier;

/**
 * What a run needs besides the model weights to continue exactly: the optimizer and EMA state,
 * the RNG, the step, and the position in the shuffled data. {@link ForwardTrainer} and
 * {@link dev.biflow.flow.inverse.BackwardTrainer} both store it with {@link #write} and
 * restore it with {@link #read}, so run folders of either kind share one file layout:
 * <pre>
 *   tensors   "opt." + AdamW.state() keys, then "ema." + Ema.state() keys (only with EMA),
 *             then "data_order" (the permutation as float32: exact below 2^24 examples)
 *   metadata  "step", "cursor", "rng" (the three longs of Rng.state(), comma-separated)
 * </pre>
 * The keys and their order are the format of existing run folders and must not change.
 * Trainers write this file before their model file, so a model never points at a newer state
 * than exists.
 *
 * <p>The arrays are held as given, not copied: {@link #capture} takes fresh copies from the
 * optimizer, EMA and RNG, and a trainer replaces its data order rather than changing it in place.
 *
 * @param opt    optimizer state by AdamW's own names (no prefix)
 * @param ema    EMA state by Ema's own names (no prefix); empty when the run has no EMA
 * @param rng    {@link Rng#state()}
 * @param step   optimizer steps taken
 * @param cursor the next position in {@code order}
 * @param order  the current permutation of the training examples
 */
public record TrainingState(Map<String, Tensor> opt, Map<String, Tensor> ema, long[] rng, long step, int cursor, int[] order) {
    /** Tensor names: prefixes of the optimizer and EMA state, and the data order. */
    public static final String OPT_PREFIX = "opt.", EMA_PREFIX = "ema.", ORDER_KEY = "data_order";
    /** Metadata names. */
    public static final String STEP_KEY = "step", CURSOR_KEY = "cursor", RNG_KEY = "rng";

    /** The state of a run now; ema may be null (no EMA). */
    public static TrainingState capture(AdamW opt, Ema ema, Rng rng, long step, int cursor, int[] order) {
        return new TrainingState(opt.state(), ema != null ? ema.state() : Map.of(), rng.state(), step, cursor, order);
    }

    /** Writes the state file atomically (Safetensors.write). */
    public void write(Path file) throws IOException {
        Safetensors.write(file, tensors(), metadata());
    }

    /** The bytes {@link #write} puts in the file. */
    public byte[] toBytes() { return Safetensors.toBytes(tensors(), metadata()); }

    private Map<String, Tensor> tensors() {
        Map<String, Tensor> tensors = new LinkedHashMap<>();
        for (var e : opt.entrySet()) tensors.put(OPT_PREFIX + e.getKey(), e.getValue());
        for (var e : ema.entrySet()) tensors.put(EMA_PREFIX + e.getKey(), e.getValue());
        float[] ord = new float[order.length];
        for (int i = 0; i < ord.length; i++) ord[i] = order[i]; // exact below 2^24 examples
        tensors.put(ORDER_KEY, Tensor.of(ord, ord.length));
        return tensors;
    }

    private Map<String, String> metadata() {
        Map<String, String> meta = new LinkedHashMap<>();
        meta.put(STEP_KEY, Long.toString(step));
        meta.put(CURSOR_KEY, Integer.toString(cursor));
        meta.put(RNG_KEY, rng[0] + "," + rng[1] + "," + rng[2]);
        return meta;
    }

    /** Reads a file written by {@link #write} (or by either trainer before this class existed: same layout). */
    public static TrainingState read(Path file) throws IOException {
        return read(Safetensors.read(file), file.toString());
    }

    /** Parses a training state's bytes; {@code file} names them in errors (and for fuzzing). */
    public static TrainingState read(byte[] bytes, String file) throws IOException {
        return read(Safetensors.read(bytes, file), file);
    }

    private static TrainingState read(Safetensors.Contents c, String file) throws IOException {
        Map<String, Tensor> o = new LinkedHashMap<>(), e = new LinkedHashMap<>();
        for (var en : c.tensors().entrySet()) {
            if (en.getKey().startsWith(OPT_PREFIX)) o.put(en.getKey().substring(OPT_PREFIX.length()), en.getValue());
            else if (en.getKey().startsWith(EMA_PREFIX)) e.put(en.getKey().substring(EMA_PREFIX.length()), en.getValue());
        }
        String[] r = need(c, file, RNG_KEY).split(",");
        long[] rs = new long[3];
        if (r.length != 3) throw damaged(file, "its '" + RNG_KEY + "' metadata is not three comma-separated integers");
        long step;
        int cursor;
        try {
            for (int i = 0; i < 3; i++) rs[i] = Long.parseLong(r[i].trim());
            step = Long.parseLong(need(c, file, STEP_KEY));
            cursor = Integer.parseInt(need(c, file, CURSOR_KEY));
        } catch (NumberFormatException ex) {
            throw damaged(file, "its metadata " + c.metadata() + " holds a value that is not an integer");
        }
        if (!c.tensors().containsKey(ORDER_KEY)) throw damaged(file, "it has no '" + ORDER_KEY + "' tensor");
        float[] ord = c.tensor(ORDER_KEY).data();
        int[] order = new int[ord.length];
        boolean[] seen = new boolean[ord.length];
        for (int i = 0; i < ord.length; i++) {
            float v = ord[i];
            if (!(v >= 0 && v < ord.length && v == Math.rint(v)) || seen[(int) v])
                throw damaged(file, "'" + ORDER_KEY + "' is not a permutation of 0.." + (ord.length - 1) + " (value " + v + " at index " + i + ")");
            seen[(int) v] = true;
            order[i] = (int) v;
        }
        if (step < 0 || cursor < 0 || cursor > order.length)
            throw damaged(file, "step " + step + " / cursor " + cursor + " are outside [0, ...] / [0, " + order.length + "]");
        return new TrainingState(o, e, rs, step, cursor, order);
    }

    private static String need(Safetensors.Contents c, String file, String key) throws IOException {
        String v = c.metadata().get(key);
        if (v == null) throw damaged(file, "it has no '" + key + "' metadata");
        return v;
    }

    private static IOException damaged(String file, String what) {
        return new IOException(file + " is not a valid training state: " + what + "; it is damaged or not written by a training run"
                + " (resume from an intact run folder, or start a new run from its settings)");
    }

    /**
     * Loads the optimizer, the EMA (when the run has one: ema not null) and the RNG; step, cursor
     * and order are the caller's to take, after any checks of its own.
     */
    public void restore(AdamW opt, Ema ema, Rng rng) {
        opt.loadState(this.opt);
        if (ema != null) ema.loadState(this.ema);
        rng.setState(this.rng);
    }

    // ==================================================================== the checkpoint both trainers write

    /** A trainer's three files: its model, this state, and its EMA weights (a checkpoint holds the third only with an EMA). */
    public record Files(String model, String state, String ema) {
        /** The parts a checkpoint of a run with (or without) an EMA has. */
        public List<String> names(boolean withEma) { return withEma ? List.of(model, state, ema) : List.of(model, state); }
    }

    /**
     * The parts of a checkpoint, in order: the model (modelBytes: its weights and the trainer's metadata), this state,
     * and with an EMA the EMA weights, written by the same function while the EMA is swapped into the model (then
     * swapped back, also on failure) so that both files load with the same loader.
     *
     * @param emaBytes the EMA file's bytes, called with the EMA weights in the model; null when the run has no EMA
     */
    public List<RunCheckpoint.Part> parts(Files files, Supplier<byte[]> modelBytes, Ema ema, Supplier<byte[]> emaBytes) {
        List<RunCheckpoint.Part> parts = new ArrayList<>();
        parts.add(new RunCheckpoint.Part(files.model(), modelBytes.get()));
        parts.add(new RunCheckpoint.Part(files.state(), toBytes()));
        if (ema != null) {
            ema.swap();
            try {
                parts.add(new RunCheckpoint.Part(files.ema(), emaBytes.get()));
            } finally {
                ema.swap();
            }
        }
        return parts;
    }

    /**
     * The state of a checkpoint folder, checked against the model files beside it (one checkpoint: the same step) and
     * against the dataset (its data order covers every example), with optimiser, EMA and RNG restored; the step agreed
     * on is {@link #step()} of the result. Cursor and order are the caller's to take.
     */
    public static TrainingState resume(Path from, RunCheckpoint.Manifest m, Files files, boolean withEma, int examples,
                                       AdamW opt, Ema ema, Rng rng) throws IOException {
        Path sf = from.resolve(files.state()), mf = from.resolve(files.model());
        TrainingState s = read(sf);
        long step = RunCheckpoint.checkSteps(from, m, sf, s.step(), withEma ? List.of(mf, from.resolve(files.ema())) : List.of(mf));
        if (s.order().length != examples)
            throw new IllegalArgumentException("cannot resume: " + sf + " has a data order over " + s.order().length + " examples, this dataset has "
                    + examples + " (resume with the dataset the run was trained on)");
        s.restore(opt, ema, rng);
        return new TrainingState(s.opt(), s.ema(), s.rng(), step, s.cursor(), s.order());
    }
}
