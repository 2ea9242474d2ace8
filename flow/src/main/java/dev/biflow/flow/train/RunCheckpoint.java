// A run folder's checkpoint as one unit: every part staged and fsynced, a manifest committed atomically, then the parts installed.
package dev.biflow.flow.train;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;

import java.io.IOException;
import java.io.InputStream;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import java.util.Locale;
import java.util.function.BiConsumer;
import java.util.zip.CRC32C;

/**
 * Writes and opens the checkpoint of a run folder (model, training state, maybe EMA weights) as one
 * unit, so that a kill at any moment leaves either the previous checkpoint or the new one, never a
 * mix. {@link #commit} is a small redo log:
 * <ol>
 *   <li>every part is written to {@code .<file>.staged} and fsynced (the live files are untouched);</li>
 *   <li>the manifest {@value #MANIFEST} (step, run counters, and each part's file name, size and
 *       CRC32C) is written to a temporary file, fsynced, renamed over the old one and the folder
 *       fsynced: this rename is the commit point;</li>
 *   <li>each staged file is renamed over its live name, then the folder is fsynced.</li>
 * </ol>
 * {@link #open} (on resume) removes stale temporary files, checks every part the manifest lists
 * against its size and checksum, finishes step 3 for a part that was staged and committed but not
 * yet installed (the staged file has the manifest's checksum), and deletes staged files of a
 * commit that never happened. Any other mismatch is an {@link IOException} whose one-line message
 * names the file and what is wrong with it: a checkpoint is never resumed from mismatched parts.
 *
 * <p>Fault injection for tests: {@link #setFaultHook} installs a callback run at every named point of
 * a commit; the system property {@value #CRASH_PROPERTY} = {@code STEP:POINT} halts the JVM
 * ({@link Runtime#halt}, no clean-up) at that point of the checkpoint of that step.
 */
public final class RunCheckpoint {
    private RunCheckpoint() {}

    /** The manifest's name in a run folder. */
    public static final String MANIFEST = "checkpoint.json";
    /** Format version written into the manifest. */
    public static final int FORMAT = 1;
    /** System property {@code STEP:POINT}: halt the JVM at that point of that step's checkpoint (tests only). */
    public static final String CRASH_PROPERTY = "biflow.test.crashAt";
    /** Exit status of a JVM halted by {@link #CRASH_PROPERTY}. */
    public static final int CRASH_STATUS = 86;

    private static final ObjectMapper JSON = new ObjectMapper();
    private static volatile BiConsumer<Long, String> faultHook;

    /** One file of a checkpoint and its bytes. */
    public record Part(String file, byte[] bytes) {
        public Part {
            if (file == null || file.isEmpty() || file.contains("/") || file.contains("\\") || file.startsWith("."))
                throw new IllegalArgumentException("checkpoint part name must be a plain file name, got '" + file + "'");
        }
    }

    /** One part as the manifest records it. */
    public record Entry(String file, long bytes, String crc32c) {}

    /**
     * A committed checkpoint: the step, the run's skipped steps so far and bad steps in a row at that
     * step (the divergence guard's state), and the parts.
     */
    public record Manifest(long step, long skipped, int badInARow, List<Entry> parts) {
        public Manifest {
            parts = List.copyOf(parts);
        }

        public boolean has(String file) { return parts.stream().anyMatch(e -> e.file().equals(file)); }
    }

    /** Installs a callback run at each named point of every commit (null: none); for tests. */
    public static void setFaultHook(BiConsumer<Long, String> hook) { faultHook = hook; }

    private static void point(long step, String name) {
        BiConsumer<Long, String> h = faultHook;
        if (h != null) h.accept(step, name);
        String crash = System.getProperty(CRASH_PROPERTY);
        if (crash != null && crash.equals(step + ":" + name)) {
            System.out.flush();
            System.err.flush();
            Runtime.getRuntime().halt(CRASH_STATUS);
        }
    }

    static String stagedName(String file) { return "." + file + ".staged"; }

    /**
     * Commits parts as the checkpoint of {@code step} (see the class comment). The folder must exist.
     * On an exception the previous checkpoint stays valid (or, after the commit point, the new one
     * is completed by the next {@link #open}).
     */
    public static Manifest commit(Path dir, long step, long skipped, int badInARow, List<Part> parts) throws IOException {
        List<Entry> entries = new ArrayList<>();
        for (Part p : parts) {
            point(step, "stage:" + p.file() + ":begin");
            Path staged = dir.resolve(stagedName(p.file()));
            try (FileChannel ch = FileChannel.open(staged, StandardOpenOption.CREATE, StandardOpenOption.WRITE,
                    StandardOpenOption.TRUNCATE_EXISTING)) {
                ByteBuffer b = ByteBuffer.wrap(p.bytes());
                int half = p.bytes().length / 2;
                b.limit(half);
                while (b.hasRemaining()) ch.write(b);
                point(step, "stage:" + p.file() + ":half");
                b.limit(p.bytes().length);
                while (b.hasRemaining()) ch.write(b);
                ch.force(true);
            } catch (IOException e) {
                throw fsError("write", staged, e);
            }
            entries.add(new Entry(p.file(), p.bytes().length, crc(p.bytes())));
            point(step, "stage:" + p.file() + ":done");
        }
        Manifest m = new Manifest(step, skipped, badInARow, entries);
        byte[] json = toJson(m);
        Path tmp = dir.resolve("." + MANIFEST + ".tmp"), target = dir.resolve(MANIFEST);
        point(step, "manifest:begin");
        try (FileChannel ch = FileChannel.open(tmp, StandardOpenOption.CREATE, StandardOpenOption.WRITE, StandardOpenOption.TRUNCATE_EXISTING)) {
            ByteBuffer b = ByteBuffer.wrap(json);
            while (b.hasRemaining()) ch.write(b);
            ch.force(true);
        } catch (IOException e) {
            throw fsError("write", tmp, e);
        }
        point(step, "manifest:written");
        move(tmp, target);
        syncDirectory(dir);
        point(step, "manifest:committed");
        for (Entry e : entries) {
            point(step, "install:" + e.file() + ":begin");
            move(dir.resolve(stagedName(e.file())), dir.resolve(e.file()));
            point(step, "install:" + e.file() + ":done");
        }
        syncDirectory(dir);
        point(step, "done");
        return m;
    }

    /**
     * Opens the committed checkpoint of a run folder for resuming: cleans stale temporary files,
     * verifies every part (completing an installation the commit did not finish) and returns the
     * manifest; null when the folder has no manifest (a run folder of an older version: the caller
     * checks its files itself). {@code expected} are the parts this run must have (e.g. the EMA
     * file only with EMA). Errors are one line naming the file and the problem.
     */
    public static Manifest open(Path dir, Collection<String> expected) throws IOException {
        cleanStale(dir, expected);
        Path mf = dir.resolve(MANIFEST);
        byte[] text;
        try {
            text = Files.readAllBytes(mf);
        } catch (NoSuchFileException e) {
            return null;
        } catch (IOException e) {
            throw fsError("read", mf, e);
        }
        Manifest m = parse(mf, text);
        for (String f : expected)
            if (!m.has(f))
                throw new IOException("cannot resume from " + dir + ": " + mf + " (step " + m.step() + ") does not list " + f
                        + ", which this run needs; the run folder was made with other settings or edited by hand");
        for (Entry e : m.parts()) {
            Path live = dir.resolve(e.file()), staged = dir.resolve(stagedName(e.file()));
            String liveProblem = mismatch(live, e);
            if (liveProblem == null) {
                Files.deleteIfExists(staged); // a newer part whose commit never happened
                continue;
            }
            if (Files.exists(staged) && mismatch(staged, e) == null) {
                move(staged, live); // committed but not yet installed: finish the commit
                syncDirectory(dir);
                continue;
            }
            throw new IOException("cannot resume from " + dir + ": " + live + " " + liveProblem + " (" + mf + ", step " + m.step()
                    + ", lists " + e.bytes() + " bytes, CRC32C " + e.crc32c() + "); the file was changed or damaged after the checkpoint:"
                    + " restore it from a backup, or start a new run from the settings (--config " + dir.resolve("config.json") + " --name <new-name>)");
        }
        return m;
    }

    /**
     * Checks that the training state and the model files (their {@code step} metadata) are all at
     * the manifest's step, or, in a run folder of an older version without a manifest, at one
     * step; returns it. Otherwise a one-line error that names the files and their steps.
     */
    public static long checkSteps(Path dir, Manifest m, Path stateFile, long stateStep, List<Path> modelFiles) throws IOException {
        java.util.Map<Path, Long> steps = new java.util.LinkedHashMap<>();
        steps.put(stateFile, stateStep);
        for (Path f : modelFiles) {
            if (!Files.exists(f))
                throw new IOException("cannot resume from " + dir + ": " + f + " is missing; this run writes it with every checkpoint");
            String v = dev.biflow.engine.io.Safetensors.readHeader(f).metadata().get("step");
            long s;
            try {
                s = Long.parseLong(v);
            } catch (NumberFormatException e) {
                throw new IOException("cannot resume from " + dir + ": " + f + " has no valid 'step' metadata (" + v
                        + "); it was not written by a training run of this folder");
            }
            steps.put(f, s);
        }
        long want = m != null ? m.step() : stateStep;
        List<String> all = new ArrayList<>();
        boolean agree = true;
        for (var e : steps.entrySet()) {
            all.add(e.getKey().getFileName() + " at step " + e.getValue());
            agree &= e.getValue() == want;
        }
        if (agree) return want;
        if (m != null)
            throw new IOException("cannot resume from " + dir + ": " + MANIFEST + " says step " + m.step() + " but " + String.join(", ", all)
                    + "; the folder mixes checkpoints: restore it from a backup, or start a new run from the settings (--config "
                    + dir.resolve("config.json") + " --name <new-name>)");
        throw new IOException("cannot resume from " + dir + ": it has no " + MANIFEST + " (written by an older biflow) and its files are from"
                + " different steps (" + String.join(", ", all) + "), a checkpoint interrupted between files; it cannot be resumed exactly:"
                + " start a new run from its settings (--config " + dir.resolve("config.json") + " --name <new-name>)");
    }

    /** Null when file has the entry's size and checksum, else what is wrong ("is missing", "is 12 bytes ..."). */
    private static String mismatch(Path file, Entry e) throws IOException {
        if (!Files.exists(file)) return "is missing";
        long size;
        try {
            size = Files.size(file);
        } catch (IOException ex) {
            throw fsError("read the size of", file, ex);
        }
        if (size != e.bytes()) return "is " + size + " bytes";
        String c = crc(file);
        return c.equals(e.crc32c()) ? null : "has CRC32C " + c;
    }

    /**
     * Deletes the leftovers of interrupted writes of the given parts and of the manifest: the
     * temporary files of atomic writes ({@code .<file>.<random>.tmp}) and the manifest's temporary
     * file. Staged parts are left for {@link #open} to judge. Returns the files deleted.
     */
    public static List<Path> cleanStale(Path dir, Collection<String> parts) throws IOException {
        List<Path> removed = new ArrayList<>();
        if (!Files.isDirectory(dir)) return removed;
        try (DirectoryStream<Path> ds = Files.newDirectoryStream(dir, ".*.tmp")) {
            for (Path p : ds) {
                String n = p.getFileName().toString();
                boolean ours = n.equals("." + MANIFEST + ".tmp") || n.startsWith("." + MANIFEST + ".");
                for (String f : parts) ours |= n.startsWith("." + f + ".");
                if (ours && Files.deleteIfExists(p)) removed.add(p);
            }
        } catch (IOException e) {
            throw fsError("list", dir, e);
        }
        return removed;
    }

    // ------------------------------------------------------------------ manifest format

    static byte[] toJson(Manifest m) {
        ObjectNode o = JSON.createObjectNode();
        o.put("format", FORMAT);
        o.put("step", m.step());
        o.put("skipped_steps", m.skipped());
        o.put("bad_in_a_row", m.badInARow());
        ArrayNode a = o.putArray("parts");
        for (Entry e : m.parts()) a.addObject().put("file", e.file()).put("bytes", e.bytes()).put("crc32c", e.crc32c());
        try {
            return (JSON.writerWithDefaultPrettyPrinter().writeValueAsString(o) + "\n").getBytes(StandardCharsets.UTF_8);
        } catch (JsonProcessingException e) {
            throw new IllegalStateException(e);
        }
    }

    /** Reads a manifest file (without checking the parts). */
    public static Manifest read(Path file) throws IOException {
        try {
            return parse(file, Files.readAllBytes(file));
        } catch (NoSuchFileException e) {
            throw new IOException(file + " does not exist; it is written with every checkpoint of a training run");
        }
    }

    private static Manifest parse(Path mf, byte[] text) throws IOException {
        String bad = mf + " is damaged (%s); it is written last by every checkpoint, so the folder was changed by hand or the disk failed:"
                + " restore it from a backup, or start a new run from the settings";
        JsonNode o;
        try {
            o = JSON.readTree(text);
        } catch (JsonProcessingException e) {
            throw new IOException(String.format(Locale.ROOT, bad, "not valid JSON: " + e.getOriginalMessage()));
        }
        if (o == null || !o.isObject()) throw new IOException(String.format(Locale.ROOT, bad, "not a JSON object"));
        if (o.path("format").asInt(-1) != FORMAT)
            throw new IOException(String.format(Locale.ROOT, bad, "format " + o.path("format") + ", this version reads format " + FORMAT));
        if (!o.path("step").canConvertToLong() || o.path("step").asLong() < 0 || !o.path("parts").isArray() || o.path("parts").isEmpty())
            throw new IOException(String.format(Locale.ROOT, bad, "no valid 'step' or 'parts'"));
        List<Entry> parts = new ArrayList<>();
        for (JsonNode p : o.path("parts")) {
            String f = p.path("file").asText("");
            if (f.isEmpty() || f.contains("/") || f.contains("\\") || f.startsWith(".") || !p.path("bytes").canConvertToLong()
                    || !p.path("crc32c").isTextual())
                throw new IOException(String.format(Locale.ROOT, bad, "part " + p + " is not {file, bytes, crc32c}"));
            parts.add(new Entry(f, p.path("bytes").asLong(), p.path("crc32c").asText()));
        }
        return new Manifest(o.path("step").asLong(), o.path("skipped_steps").asLong(0), o.path("bad_in_a_row").asInt(0), parts);
    }

    // ------------------------------------------------------------------ helpers

    static String crc(byte[] b) {
        CRC32C c = new CRC32C();
        c.update(b);
        return String.format(Locale.ROOT, "%08x", c.getValue());
    }

    static String crc(Path file) throws IOException {
        CRC32C c = new CRC32C();
        try (InputStream in = Files.newInputStream(file)) {
            byte[] buf = new byte[1 << 16];
            for (int r; (r = in.read(buf)) > 0; ) c.update(buf, 0, r);
        } catch (IOException e) {
            throw fsError("read", file, e);
        }
        return String.format(Locale.ROOT, "%08x", c.getValue());
    }

    private static void move(Path from, Path to) throws IOException {
        try {
            try {
                Files.move(from, to, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
            } catch (AtomicMoveNotSupportedException e) {
                Files.move(from, to, StandardCopyOption.REPLACE_EXISTING);
            }
        } catch (IOException e) {
            throw new IOException("cannot rename " + from + " to " + to + ": " + reason(e), e);
        }
    }

    private static void syncDirectory(Path dir) {
        try (FileChannel d = FileChannel.open(dir, StandardOpenOption.READ)) {
            d.force(true);
        } catch (IOException | UnsupportedOperationException ignored) {
            // Windows cannot open directories; the renames stay atomic, only their durability is weaker
        }
    }

    /** "cannot write FILE: No space left on device" style errors: the operation, the file and the reason. */
    static IOException fsError(String op, Path file, IOException e) {
        return new IOException("cannot " + op + " " + file + ": " + reason(e), e);
    }

    static String reason(IOException e) {
        if (e instanceof java.nio.file.FileSystemException fse && fse.getReason() != null) return fse.getReason();
        if (e instanceof NoSuchFileException) return "no such file or directory";
        if (e instanceof java.nio.file.AccessDeniedException) return "permission denied";
        return e.getMessage() != null ? e.getMessage() : e.getClass().getSimpleName();
    }
}
