// Safetensors, the checkpoint format shared with PyTorch / Hugging Face: u64 header length, JSON header, raw little-endian data.
package dev.biflow.engine.io;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.core.StreamReadFeature;
import com.fasterxml.jackson.core.io.JsonStringEncoder;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.json.JsonMapper;
import dev.biflow.engine.Shape;
import dev.biflow.engine.Tensor;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Reads and writes <a href="https://github.com/huggingface/safetensors">safetensors</a> files.
 *
 * <p>Layout: 8-byte little-endian unsigned header length N; N bytes of UTF-8 JSON
 * {@code {"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...,
 * "__metadata__": {"key": "value"}}}; then the data buffer, offsets relative to its start.
 *
 * <p>Writing: float32 tensors (and int64/int32 through {@link #builder()}), in the caller's
 * order, each tensor's bytes right after the previous one's; the header is padded with spaces
 * to a multiple of 8 bytes, as the reference implementation does. JSON formatting matches
 * Python's {@code json.dumps}, so a file read and written back is byte-identical to one written
 * that way. Files are written atomically ({@link AtomicWrite}).
 *
 * <p>Reading: any of the dtypes in {@link Dtype} is converted to float32 (F32 bit-exact,
 * NaN payloads included; integers above 2^24 round, use {@link #readLongs} for exact values).
 * Every inconsistency in the header is a {@link CorruptFileException} naming the file, the
 * problem and the fix; no input, however malformed, makes the reader throw anything else or
 * allocate more than the file's size (fuzzed by {@code SafetensorsFuzzTest}).
 */
public final class Safetensors {
    private Safetensors() {}

    /** Headers larger than this are rejected before being read (the reference limit is the same). */
    public static final long MAX_HEADER_BYTES = 100L << 20;
    /** The reserved header key holding the string-to-string metadata map. */
    public static final String METADATA_KEY = "__metadata__";

    private static final int MAX_ARRAY = Integer.MAX_VALUE - 8;
    private static final int CHUNK_BYTES = 1 << 20;

    private static final ObjectMapper JSON = JsonMapper.builder()
            .enable(StreamReadFeature.STRICT_DUPLICATE_DETECTION)
            .enable(DeserializationFeature.FAIL_ON_TRAILING_TOKENS)
            .build();

    /** Element types of the format, with their sizes in bytes. */
    public enum Dtype {
        F64(8), F32(4), F16(2), BF16(2), F8_E5M2(1), F8_E4M3(1),
        I64(8), I32(4), I16(2), I8(1), U64(8), U32(4), U16(2), U8(1), BOOL(1);

        private final int size;

        Dtype(int size) { this.size = size; }

        public int size() { return size; }

        public boolean isInteger() {
            return switch (this) {
                case F64, F32, F16, BF16, F8_E5M2, F8_E4M3 -> false;
                default -> true;
            };
        }
    }

    /** One header entry; offsets are relative to the data buffer. */
    public record TensorInfo(String name, Dtype dtype, int[] shape, long begin, long end) {
        public TensorInfo {
            shape = shape.clone();
        }

        @Override public int[] shape() { return shape.clone(); }

        public long numel() {
            long n = 1;
            for (int d : shape) n *= d; // cannot overflow: validated against the byte span when parsed
            return n;
        }

        @Override public String toString() {
            return name + " " + dtype + Shape.str(shape) + " [" + begin + ", " + end + ")";
        }
    }

    /**
     * A parsed header. {@code tensors} are in the order the JSON lists them; {@code headerLength}
     * is N, so the data buffer starts at byte {@code 8 + N}.
     */
    public record Header(String source, List<TensorInfo> tensors, Map<String, String> metadata, long headerLength) {
        public Header {
            tensors = List.copyOf(tensors);
            metadata = Collections.unmodifiableMap(new LinkedHashMap<>(metadata));
        }

        public long dataStart() { return 8 + headerLength; }

        public List<String> names() { return tensors.stream().map(TensorInfo::name).toList(); }

        /** The entry with this name, or an error listing the names there are. */
        public TensorInfo tensor(String name) {
            for (TensorInfo t : tensors) if (t.name.equals(name)) return t;
            throw new IllegalArgumentException(source + " has no tensor named '" + name + "'; it has " + names());
        }
    }

    /** A whole file loaded as float32 tensors (in header order) plus its metadata. */
    public record Contents(Header header, LinkedHashMap<String, Tensor> tensors, Map<String, String> metadata) {
        /** The tensor with this name, or an error listing the names there are. */
        public Tensor tensor(String name) {
            Tensor t = tensors.get(name);
            if (t == null)
                throw new IllegalArgumentException(header.source + " has no tensor named '" + name + "'; it has " + tensors.keySet());
            return t;
        }
    }

    // ================================================================ reading

    /** Loads every tensor as float32, with the metadata. */
    public static Contents read(Path path) throws IOException {
        try (FileChannel ch = FileChannel.open(path, StandardOpenOption.READ)) {
            return read(new FileSource(ch, path.toString()));
        }
    }

    /** Parses a whole file held in memory; {@code source} labels it in error messages. */
    public static Contents read(byte[] bytes, String source) throws CorruptFileException {
        try {
            return read(new BytesSource(bytes, source));
        } catch (CorruptFileException e) {
            throw e;
        } catch (IOException e) {
            throw new UncheckedIOException("in-memory read failed", e); // BytesSource throws nothing else
        }
    }

    /** Reads and validates only the header (no tensor data is loaded). */
    public static Header readHeader(Path path) throws IOException {
        try (FileChannel ch = FileChannel.open(path, StandardOpenOption.READ)) {
            return parseHeader(new FileSource(ch, path.toString()));
        }
    }

    public static Header readHeader(byte[] bytes, String source) throws CorruptFileException {
        try {
            return parseHeader(new BytesSource(bytes, source));
        } catch (CorruptFileException e) {
            throw e;
        } catch (IOException e) {
            throw new UncheckedIOException("in-memory read failed", e);
        }
    }

    /** Loads one tensor as float32 without reading the others. */
    public static Tensor readTensor(Path path, String name) throws IOException {
        try (FileChannel ch = FileChannel.open(path, StandardOpenOption.READ)) {
            Source src = new FileSource(ch, path.toString());
            Header h = parseHeader(src);
            TensorInfo t = h.tensor(name);
            MemoryBudget.check(src.name(), "tensor '" + name + "' (" + t.numel() + " " + t.dtype + " values, as float32)", floatBytes(t));
            return Tensor.of(decodeFloats(src, h, t), t.shape);
        }
    }

    /**
     * Rows {@code first .. first + count - 1} of a tensor (along its first dimension) as float32,
     * shaped (count, ...): for files too large to load whole, read batch by batch.
     */
    public static Tensor readRows(Path path, String name, long first, int count) throws IOException {
        try (FileChannel ch = FileChannel.open(path, StandardOpenOption.READ)) {
            Source src = new FileSource(ch, path.toString());
            Header h = parseHeader(src);
            TensorInfo t = h.tensor(name);
            if (t.shape.length == 0)
                throw new IllegalArgumentException(src.name() + ": tensor '" + name + "' is a scalar; it has no rows");
            if (first < 0 || count < 0 || first + count > t.shape[0])
                throw new IllegalArgumentException(src.name() + ": rows " + first + ".." + (first + count) + " of tensor '" + name
                        + "' are outside its " + t.shape[0] + " rows");
            long perRow = t.shape[0] == 0 ? 0 : t.numel() / t.shape[0];
            long n = perRow * count;
            if (n > MAX_ARRAY)
                throw new IllegalArgumentException(src.name() + ": " + count + " rows of tensor '" + name + "' hold " + n
                        + " elements, more than a Java array holds; read fewer rows at a time");
            MemoryBudget.check(src.name(), count + " rows of tensor '" + name + "' (as float32)", n * 4);
            int[] shape = t.shape.clone();
            shape[0] = count;
            return Tensor.of(decodeFloats(src, h, t, first * perRow, (int) n), shape);
        }
    }

    /**
     * The exact values of an integer (I*, U*, BOOL) tensor, flattened. U64 values above
     * 2^63 - 1 come back negative (the same 64 bits, read as signed).
     */
    public static long[] readLongs(Path path, String name) throws IOException {
        try (FileChannel ch = FileChannel.open(path, StandardOpenOption.READ)) {
            Source src = new FileSource(ch, path.toString());
            Header h = parseHeader(src);
            TensorInfo t = h.tensor(name);
            if (!t.dtype.isInteger())
                throw new IllegalArgumentException(src.name() + ": tensor '" + name + "' is " + t.dtype
                        + ", not an integer dtype; use readTensor for floating-point tensors");
            MemoryBudget.check(src.name(), "tensor '" + name + "' (" + t.numel() + " " + t.dtype + " values, as int64)",
                    t.numel() > Long.MAX_VALUE / 8 ? -1 : t.numel() * 8);
            long[] out = new long[checkedNumel(src, t)];
            forEachChunk(src, h, t, (buf, off, cnt) -> {
                for (int j = 0; j < cnt; j++) out[off + j] = switch (t.dtype) {
                    case I64, U64 -> buf.getLong();
                    case I32 -> buf.getInt();
                    case U32 -> buf.getInt() & 0xFFFF_FFFFL;
                    case I16 -> buf.getShort();
                    case U16 -> buf.getShort() & 0xFFFF;
                    case I8 -> buf.get();
                    case U8 -> buf.get() & 0xFF;
                    case BOOL -> buf.get() != 0 ? 1 : 0;
                    default -> throw new AssertionError(t.dtype);
                };
            });
            return out;
        }
    }

    private static Contents read(Source src) throws IOException {
        Header h = parseHeader(src);
        long total = 0;
        for (TensorInfo t : h.tensors) total = total < 0 || floatBytes(t) < 0 ? -1 : total + floatBytes(t);
        MemoryBudget.check(src.name(), "loading its " + h.tensors.size() + " tensors as float32", total);
        LinkedHashMap<String, Tensor> tensors = new LinkedHashMap<>();
        for (TensorInfo t : h.tensors) tensors.put(t.name, Tensor.of(decodeFloats(src, h, t), t.shape));
        return new Contents(h, tensors, h.metadata);
    }

    static Header parseHeader(Source src) throws IOException {
        String f = src.name();
        long size = src.size();
        if (size < 8)
            throw new CorruptFileException(f, "the file is " + size + " bytes long, shorter than the 8-byte header-length prefix"
                    + " of a safetensors file; it is empty or truncated (re-save or re-download it)");
        ByteBuffer lenBuf = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN);
        src.read(0, lenBuf);
        long n = lenBuf.getLong(0);
        if (n < 0 || n > MAX_HEADER_BYTES)
            throw new CorruptFileException(f, "the header-length prefix says " + Long.toUnsignedString(n)
                    + " bytes, more than the " + MAX_HEADER_BYTES + "-byte limit; this is not a safetensors file"
                    + " (the first 8 bytes must be the little-endian length of the JSON header)");
        if (n > size - 8)
            throw new CorruptFileException(f, "the header-length prefix says " + n + " bytes but only " + (size - 8)
                    + " bytes follow it; the file is truncated or not a safetensors file (re-save or re-download it)");
        if (n < 2)
            throw new CorruptFileException(f, "the JSON header is " + n + " bytes long, too short for a JSON object;"
                    + " the file is corrupt (re-save it)");
        // the bytes, their String (UTF-16) and the JSON tree: about 5 bytes per header byte
        MemoryBudget.check(f, "the " + n + "-byte JSON header", 5 * n);
        ByteBuffer hb = ByteBuffer.allocate((int) n);
        src.read(8, hb);
        hb.flip();
        String text;
        try {
            text = StandardCharsets.UTF_8.newDecoder()
                    .onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT)
                    .decode(hb).toString();
        } catch (CharacterCodingException e) {
            throw new CorruptFileException(f, "the " + n + "-byte header is not valid UTF-8; the file is corrupt or not a safetensors file", e);
        }
        JsonNode root;
        try {
            root = JSON.readTree(text);
        } catch (JsonProcessingException e) {
            String why = java.util.Objects.toString(e.getOriginalMessage(), e.getClass().getSimpleName()).replaceAll("\\[Source: [^;\\]]*; ", "[");
            if (why.startsWith("Duplicate field"))
                throw new CorruptFileException(f, "the header lists a name twice (" + why + "); names must be unique,"
                        + " the file is corrupt", e);
            var at = e.getLocation();
            throw new CorruptFileException(f, "the header is not valid JSON (" + why
                    + (at == null ? "" : " at line " + at.getLineNr() + ", column " + at.getColumnNr())
                    + "); the file is corrupt or not a safetensors file", e);
        }
        if (root == null || !root.isObject())
            throw new CorruptFileException(f, "the header is " + describe(root) + ", expected a JSON object mapping"
                    + " tensor names to {\"dtype\", \"shape\", \"data_offsets\"}");
        long bufferLen = size - 8 - n;
        List<TensorInfo> tensors = new ArrayList<>();
        Map<String, String> metadata = new LinkedHashMap<>();
        for (Map.Entry<String, JsonNode> e : root.properties()) {
            String name = e.getKey();
            JsonNode v = e.getValue();
            if (name.equals(METADATA_KEY)) {
                parseMetadata(f, v, metadata);
                continue;
            }
            tensors.add(parseEntry(f, name, v, bufferLen));
        }
        checkOverlaps(f, tensors);
        return new Header(f, tensors, metadata, n);
    }

    private static void parseMetadata(String f, JsonNode v, Map<String, String> out) throws CorruptFileException {
        if (v.isNull()) return; // Python writers emit "__metadata__": null for no metadata
        if (!v.isObject())
            throw new CorruptFileException(f, "\"" + METADATA_KEY + "\" is " + describe(v) + ", expected an object of string values");
        for (Map.Entry<String, JsonNode> m : v.properties()) {
            if (!m.getValue().isTextual())
                throw new CorruptFileException(f, "metadata value for key '" + m.getKey() + "' is " + describe(m.getValue())
                        + "; safetensors metadata maps strings to strings (the writer should have stored it as a JSON string)");
            out.put(m.getKey(), m.getValue().textValue());
        }
    }

    private static TensorInfo parseEntry(String f, String name, JsonNode v, long bufferLen) throws CorruptFileException {
        String where = "tensor '" + name + "'";
        if (!v.isObject())
            throw new CorruptFileException(f, where + " is " + describe(v) + ", expected {\"dtype\", \"shape\", \"data_offsets\"}");
        JsonNode dt = v.get("dtype");
        if (dt == null || !dt.isTextual())
            throw new CorruptFileException(f, where + " has dtype " + describe(dt) + ", expected a string such as \"F32\"");
        Dtype dtype;
        try {
            dtype = Dtype.valueOf(dt.textValue());
        } catch (IllegalArgumentException ex) {
            throw new CorruptFileException(f, where + " has dtype \"" + clip(dt.textValue()) + "\", which this reader does not support;"
                    + " supported: " + Arrays.toString(Dtype.values()) + " (convert the tensor before saving)");
        }
        JsonNode sh = v.get("shape");
        if (sh == null || !sh.isArray())
            throw new CorruptFileException(f, where + " has shape " + describe(sh) + ", expected an array of non-negative integers");
        int[] shape = new int[sh.size()];
        // numel saturates at Long.MAX_VALUE: only compared with the byte span, which fits easily.
        long numel = 1;
        boolean zero = false;
        for (int i = 0; i < shape.length; i++) {
            JsonNode d = sh.get(i);
            if (!d.isIntegralNumber() || !d.canConvertToLong() || d.longValue() < 0 || d.longValue() > Integer.MAX_VALUE)
                throw new CorruptFileException(f, where + " has dimension " + i + " = " + describe(d)
                        + ", expected an integer in 0.." + Integer.MAX_VALUE);
            shape[i] = d.intValue();
            if (shape[i] == 0) zero = true;
            else numel = numel > Long.MAX_VALUE / shape[i] ? Long.MAX_VALUE : numel * shape[i];
        }
        if (zero) numel = 0;
        JsonNode off = v.get("data_offsets");
        if (off == null || !off.isArray() || off.size() != 2)
            throw new CorruptFileException(f, where + " has data_offsets " + describe(off) + ", expected [begin, end]");
        long[] be = new long[2];
        for (int i = 0; i < 2; i++) {
            JsonNode o = off.get(i);
            if (!o.isIntegralNumber() || !o.canConvertToLong() || o.longValue() < 0)
                throw new CorruptFileException(f, where + " has data_offsets " + describe(off) + ", expected two non-negative integers");
            be[i] = o.longValue();
        }
        long begin = be[0], end = be[1];
        if (end < begin)
            throw new CorruptFileException(f, where + " has data_offsets [" + begin + ", " + end + "] with end before begin; the header is corrupt");
        if (end > bufferLen)
            throw new CorruptFileException(f, where + " has data_offsets [" + begin + ", " + end + "] out of range: the data buffer has "
                    + bufferLen + " bytes; the file is truncated (re-save or re-download it)");
        long span = end - begin;
        if (numel == Long.MAX_VALUE || numel > span / dtype.size || numel * dtype.size != span)
            throw new CorruptFileException(f, where + " has shape " + Shape.str(shape) + " of " + dtype + " ("
                    + (numel == Long.MAX_VALUE ? "too many" : numel) + " elements x " + dtype.size + " bytes) but data_offsets ["
                    + begin + ", " + end + "] span " + span + " bytes; shape and offsets disagree, the header is corrupt");
        return new TensorInfo(name, dtype, shape, begin, end);
    }

    private static void checkOverlaps(String f, List<TensorInfo> tensors) throws CorruptFileException {
        List<TensorInfo> byBegin = new ArrayList<>(tensors);
        byBegin.removeIf(t -> t.begin == t.end);
        byBegin.sort(Comparator.comparingLong(TensorInfo::begin));
        TensorInfo prev = null;
        for (TensorInfo t : byBegin) {
            if (prev != null && t.begin < prev.end)
                throw new CorruptFileException(f, "tensors '" + prev.name + "' [" + prev.begin + ", " + prev.end + ") and '" + t.name
                        + "' [" + t.begin + ", " + t.end + ") overlap in the data buffer; the header is corrupt");
            if (prev == null || t.end > prev.end) prev = t;
        }
    }

    private static String describe(JsonNode n) {
        if (n == null || n.isMissingNode()) return "missing";
        String kind = switch (n.getNodeType()) {
            case OBJECT -> "an object";
            case ARRAY -> "an array";
            case STRING -> "a string";
            case NUMBER -> "the number";
            case BOOLEAN -> "the boolean";
            case NULL -> "null";
            default -> "a " + n.getNodeType().toString().toLowerCase();
        };
        return n.isNull() ? kind : kind + " " + clip(n.toString());
    }

    private static String clip(String s) {
        return s.length() <= 60 ? s : s.substring(0, 57) + "...";
    }

    /** The bytes of {@code t} decoded to float32; -1 when that overflows a long. */
    public static long floatBytes(TensorInfo t) {
        long n = t.numel();
        return n > Long.MAX_VALUE / 4 ? -1 : n * 4;
    }

    private static int checkedNumel(Source src, TensorInfo t) throws CorruptFileException {
        long n = t.numel();
        if (n > MAX_ARRAY)
            throw new CorruptFileException(src.name(), "tensor '" + t.name + "' has " + n + " elements, more than a Java array holds ("
                    + MAX_ARRAY + "); save it split into smaller tensors");
        return (int) n;
    }

    private interface ChunkDecoder {
        /** Decodes {@code count} elements from {@code buf} (little-endian, positioned) into output index {@code offset}. */
        void decode(ByteBuffer buf, int offset, int count);
    }

    private static void forEachChunk(Source src, Header h, TensorInfo t, ChunkDecoder dec) throws IOException {
        forEachChunk(src, h, t, 0, checkedNumel(src, t), dec);
    }

    /** Decodes elements {@code start .. start + n - 1} of t (bounds checked by the caller). */
    private static void forEachChunk(Source src, Header h, TensorInfo t, long start, int n, ChunkDecoder dec) throws IOException {
        int size = t.dtype.size;
        int perChunk = CHUNK_BYTES / size;
        ByteBuffer buf = ByteBuffer.allocate((int) Math.min(CHUNK_BYTES, (long) n * size)).order(ByteOrder.LITTLE_ENDIAN);
        long pos = h.dataStart() + t.begin + start * size;
        for (int i = 0; i < n; ) {
            int cnt = Math.min(perChunk, n - i);
            buf.clear().limit(cnt * size);
            src.read(pos, buf);
            buf.flip();
            dec.decode(buf, i, cnt);
            i += cnt;
            pos += (long) cnt * size;
        }
    }

    private static float[] decodeFloats(Source src, Header h, TensorInfo t) throws IOException {
        return decodeFloats(src, h, t, 0, checkedNumel(src, t));
    }

    private static float[] decodeFloats(Source src, Header h, TensorInfo t, long start, int n) throws IOException {
        float[] out = new float[n];
        forEachChunk(src, h, t, start, n, (buf, off, cnt) -> {
            switch (t.dtype) {
                case F32 -> buf.asFloatBuffer().get(out, off, cnt);
                case F64 -> { for (int j = 0; j < cnt; j++) out[off + j] = (float) buf.getDouble(); }
                case F16 -> { for (int j = 0; j < cnt; j++) out[off + j] = Float.float16ToFloat(buf.getShort()); }
                // bfloat16 is the top half of a float32: widening is exact.
                case BF16 -> { for (int j = 0; j < cnt; j++) out[off + j] = Float.intBitsToFloat((buf.getShort() & 0xFFFF) << 16); }
                // E5M2 is the top byte of a float16.
                case F8_E5M2 -> { for (int j = 0; j < cnt; j++) out[off + j] = Float.float16ToFloat((short) ((buf.get() & 0xFF) << 8)); }
                case F8_E4M3 -> { for (int j = 0; j < cnt; j++) out[off + j] = E4M3[buf.get() & 0xFF]; }
                case I64 -> { for (int j = 0; j < cnt; j++) out[off + j] = (float) buf.getLong(); }
                case U64 -> { for (int j = 0; j < cnt; j++) out[off + j] = unsignedToFloat(buf.getLong()); }
                case I32 -> { for (int j = 0; j < cnt; j++) out[off + j] = (float) buf.getInt(); }
                case U32 -> { for (int j = 0; j < cnt; j++) out[off + j] = (float) (buf.getInt() & 0xFFFF_FFFFL); }
                case I16 -> { for (int j = 0; j < cnt; j++) out[off + j] = buf.getShort(); }
                case U16 -> { for (int j = 0; j < cnt; j++) out[off + j] = buf.getShort() & 0xFFFF; }
                case I8 -> { for (int j = 0; j < cnt; j++) out[off + j] = buf.get(); }
                case U8 -> { for (int j = 0; j < cnt; j++) out[off + j] = buf.get() & 0xFF; }
                case BOOL -> { for (int j = 0; j < cnt; j++) out[off + j] = buf.get() != 0 ? 1f : 0f; }
            }
        });
        return out;
    }

    /** Correctly rounded u64 to float: halve (keeping the sticky bit) so the value is a positive long. */
    private static float unsignedToFloat(long v) {
        if (v >= 0) return (float) v;
        return (float) ((v >>> 1) | (v & 1)) * 2f;
    }

    /** float8 E4M3 "fn" (PyTorch float8_e4m3fn): bias 7, no infinities, S.1111.111 is NaN. */
    private static final float[] E4M3 = new float[256];

    static {
        for (int b = 0; b < 256; b++) {
            int exp = (b >> 3) & 0xF, man = b & 7;
            float mag;
            if (exp == 15 && man == 7) mag = Float.NaN;
            else if (exp == 0) mag = man / 8f * 0x1p-6f;
            else mag = (1 + man / 8f) * Math.scalb(1f, exp - 7);
            E4M3[b] = (b & 0x80) != 0 ? -mag : mag;
        }
    }

    // ================================================================ writing

    /** Writes float32 tensors (in the map's iteration order) and string metadata, atomically. */
    public static void write(Path path, Map<String, Tensor> tensors, Map<String, String> metadata) throws IOException {
        builderOf(tensors, metadata).write(path);
    }

    /** The bytes {@link #write} would put in the file. */
    public static byte[] toBytes(Map<String, Tensor> tensors, Map<String, String> metadata) {
        return builderOf(tensors, metadata).toBytes();
    }

    private static Builder builderOf(Map<String, Tensor> tensors, Map<String, String> metadata) {
        Builder b = builder();
        tensors.forEach(b::f32);
        if (metadata != null) b.metadata(metadata);
        return b;
    }

    /** A file with mixed dtypes; entries are written in the order they are added. */
    public static Builder builder() { return new Builder(); }

    /**
     * Collects tensors and metadata for one file. Arrays are referenced, not copied: their
     * values at {@link #write}/{@link #toBytes} time are what gets written.
     */
    public static final class Builder {
        private record Entry(Dtype dtype, int[] shape, Object data, int length) {}

        private final LinkedHashMap<String, Entry> entries = new LinkedHashMap<>();
        private final LinkedHashMap<String, String> metadata = new LinkedHashMap<>();

        private Builder() {}

        public Builder f32(String name, Tensor t) { return add(name, Dtype.F32, t.shape(), t.data(), t.numel()); }

        public Builder f32(String name, float[] data, int... shape) { return add(name, Dtype.F32, shape.clone(), data, data.length); }

        /**
         * Stores t as IEEE half precision (round to nearest even), half the bytes of F32: for
         * shipping inference weights. Values beyond the F16 range (|x| > 65504) would become
         * infinities, so they are refused; magnitudes below 2^-24 flush to zero.
         */
        public Builder f16(String name, Tensor t) {
            float[] d = t.data();
            for (int i = 0; i < d.length; i++)
                if (Float.isFinite(d[i]) && Math.abs(d[i]) > 65504f)
                    throw new IllegalArgumentException("tensor '" + name + "': value " + d[i] + " at index " + i
                            + " is outside the F16 range (|x| <= 65504); store it as F32");
            return add(name, Dtype.F16, t.shape(), d, t.numel());
        }

        public Builder i64(String name, long[] data, int... shape) { return add(name, Dtype.I64, shape.clone(), data, data.length); }

        public Builder i32(String name, int[] data, int... shape) { return add(name, Dtype.I32, shape.clone(), data, data.length); }

        public Builder metadata(String key, String value) {
            checkText("metadata key", key);
            checkText("metadata value for '" + key + "'", value);
            metadata.put(key, value);
            return this;
        }

        public Builder metadata(Map<String, String> m) {
            m.forEach(this::metadata);
            return this;
        }

        private Builder add(String name, Dtype dtype, int[] shape, Object data, int length) {
            checkText("tensor name", name);
            if (name.equals(METADATA_KEY))
                throw new IllegalArgumentException("'" + METADATA_KEY + "' is reserved for the metadata map; rename the tensor");
            if (entries.containsKey(name))
                throw new IllegalArgumentException("tensor name '" + name + "' is already in this file; names must be unique");
            Shape.checkValid(shape);
            long numel = 1;
            for (int d : shape) numel *= d;
            if (numel != length)
                throw new IllegalArgumentException("tensor '" + name + "': " + length + " values do not fill shape "
                        + Shape.str(shape) + " (" + numel + " elements)");
            entries.put(name, new Entry(dtype, shape, data, length));
            return this;
        }

        private static void checkText(String what, String s) {
            if (s == null) throw new IllegalArgumentException(what + " is null");
            if (!StandardCharsets.UTF_8.newEncoder().canEncode(s))
                throw new IllegalArgumentException(what + " '" + s + "' is not valid Unicode (an unpaired surrogate?); it cannot be stored as UTF-8");
        }

        /** Writes the file atomically. */
        public void write(Path path) throws IOException {
            AtomicWrite.write(path, this::writeTo);
        }

        /** The whole file in memory (for files under 2 GB). */
        public byte[] toBytes() {
            byte[] header = header();
            long total = 8L + header.length + dataBytes();
            if (total > MAX_ARRAY)
                throw new IllegalArgumentException("a " + total + "-byte file does not fit in a byte array; write it to a file instead");
            ByteArrayOutputStream out = new ByteArrayOutputStream((int) total);
            try {
                writeTo(out);
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
            return out.toByteArray();
        }

        private long dataBytes() {
            long total = 0;
            for (Entry e : entries.values()) total += (long) e.length * e.dtype.size;
            return total;
        }

        /** The JSON header, space-padded to a multiple of 8 bytes, in Python json.dumps formatting. */
        byte[] header() {
            StringBuilder sb = new StringBuilder("{");
            long offset = 0;
            for (Map.Entry<String, Entry> me : entries.entrySet()) {
                Entry e = me.getValue();
                long end = offset + (long) e.length * e.dtype.size;
                if (sb.length() > 1) sb.append(", ");
                quote(sb, me.getKey());
                sb.append(": {\"dtype\": \"").append(e.dtype).append("\", \"shape\": [");
                for (int i = 0; i < e.shape.length; i++) sb.append(i > 0 ? ", " : "").append(e.shape[i]);
                sb.append("], \"data_offsets\": [").append(offset).append(", ").append(end).append("]}");
                offset = end;
            }
            if (!metadata.isEmpty()) {
                if (sb.length() > 1) sb.append(", ");
                quote(sb, METADATA_KEY);
                sb.append(": {");
                boolean first = true;
                for (Map.Entry<String, String> m : metadata.entrySet()) {
                    if (!first) sb.append(", ");
                    first = false;
                    quote(sb, m.getKey());
                    sb.append(": ");
                    quote(sb, m.getValue());
                }
                sb.append('}');
            }
            sb.append('}');
            byte[] json = sb.toString().getBytes(StandardCharsets.UTF_8);
            int padded = (json.length + 7) & ~7;
            byte[] out = Arrays.copyOf(json, padded);
            Arrays.fill(out, json.length, padded, (byte) ' ');
            return out;
        }

        private static void quote(StringBuilder sb, String s) {
            sb.append('"');
            JsonStringEncoder.getInstance().quoteAsString(s, sb);
            sb.append('"');
        }

        private void writeTo(OutputStream out) throws IOException {
            byte[] header = header();
            byte[] chunk = new byte[CHUNK_BYTES];
            ByteBuffer bb = ByteBuffer.wrap(chunk).order(ByteOrder.LITTLE_ENDIAN);
            bb.putLong(0, header.length);
            out.write(chunk, 0, 8);
            out.write(header);
            for (Entry e : entries.values()) {
                int size = e.dtype.size, perChunk = CHUNK_BYTES / size;
                for (int i = 0; i < e.length; i += perChunk) {
                    int cnt = Math.min(perChunk, e.length - i);
                    bb.clear();
                    switch (e.dtype) {
                        case F32 -> bb.asFloatBuffer().put((float[]) e.data, i, cnt);
                        case F16 -> {
                            float[] src = (float[]) e.data;
                            var sb = bb.asShortBuffer();
                            for (int j = 0; j < cnt; j++) sb.put(Float.floatToFloat16(src[i + j]));
                        }
                        case I64 -> bb.asLongBuffer().put((long[]) e.data, i, cnt);
                        case I32 -> bb.asIntBuffer().put((int[]) e.data, i, cnt);
                        default -> throw new AssertionError(e.dtype);
                    }
                    out.write(chunk, 0, cnt * size);
                }
            }
        }
    }

    /**
     * Writes F32 tensors whose size is known up front row block by row block (rows along the first
     * dimension), so an output larger than the heap streams to disk: the header is written first,
     * each {@link #put} writes its rows at their place, {@link #commit} checks every row was written
     * and moves the file into place atomically; {@link #close} without a commit removes it.
     */
    public static RowWriter rowWriter(Path target, LinkedHashMap<String, int[]> shapes, Map<String, String> metadata) throws IOException {
        return new RowWriter(target, shapes, metadata);
    }

    public static final class RowWriter implements AutoCloseable {
        private final Path target, tmp;
        private final FileChannel ch;
        private final LinkedHashMap<String, long[]> layout = new LinkedHashMap<>(); // name -> {data position, values per row, rows, rows written}
        private boolean committed;

        private RowWriter(Path target, LinkedHashMap<String, int[]> shapes, Map<String, String> metadata) throws IOException {
            Builder b = builder();
            for (var e : shapes.entrySet()) {
                long numel = 1;
                for (int d : e.getValue()) numel = Math.multiplyExact(numel, (long) d);
                if (e.getValue().length == 0 || numel > MAX_ARRAY)
                    throw new IllegalArgumentException("tensor '" + e.getKey() + "' of shape " + Shape.str(e.getValue())
                            + (e.getValue().length == 0 ? " has no rows" : " has more elements than one tensor may (" + MAX_ARRAY + ")"));
                b.add(e.getKey(), Dtype.F32, e.getValue().clone(), null, (int) numel);
            }
            if (metadata != null) b.metadata(metadata);
            byte[] header = b.header();
            long pos = 8L + header.length;
            for (var e : shapes.entrySet()) {
                int[] sh = e.getValue();
                long perRow = sh[0] == 0 ? 0 : b.entries.get(e.getKey()).length() / sh[0];
                layout.put(e.getKey(), new long[]{pos, perRow, sh[0], 0});
                pos += 4L * b.entries.get(e.getKey()).length();
            }
            this.target = target.toAbsolutePath();
            this.tmp = AtomicWrite.tempFor(this.target);
            this.ch = FileChannel.open(tmp, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE);
            try {
                ByteBuffer hb = ByteBuffer.allocate(8 + header.length).order(ByteOrder.LITTLE_ENDIAN);
                hb.putLong(header.length).put(header).flip();
                write(hb, 0);
            } catch (IOException | RuntimeException e) {
                close();
                throw e;
            }
        }

        private void write(ByteBuffer bb, long pos) throws IOException {
            while (bb.hasRemaining()) pos += ch.write(bb, pos);
        }

        /** Writes {@code rows} (shape (k, ...) matching the tensor's other dimensions) as rows {@code first .. first + k - 1}. */
        public void put(String name, long first, Tensor rows) throws IOException {
            long[] l = layout.get(name);
            if (l == null) throw new IllegalArgumentException("tensor '" + name + "' is not in this file; it has " + layout.keySet());
            int k = rows.shape().length == 0 ? 1 : rows.size(0);
            if (rows.numel() != (long) k * l[1] || first < 0 || first + k > l[2])
                throw new IllegalArgumentException("tensor '" + name + "': rows " + first + ".." + (first + k) + " of shape "
                        + Shape.str(rows.shape()) + " do not fit its " + l[2] + " rows of " + l[1] + " values");
            float[] d = rows.data();
            ByteBuffer bb = ByteBuffer.allocate((int) Math.min(CHUNK_BYTES, 4L * d.length)).order(ByteOrder.LITTLE_ENDIAN);
            long pos = l[0] + 4L * first * l[1];
            for (int i = 0; i < d.length; ) {
                int cnt = Math.min(CHUNK_BYTES / 4, d.length - i);
                bb.clear();
                bb.asFloatBuffer().put(d, i, cnt);
                bb.limit(cnt * 4);
                write(bb, pos);
                pos += cnt * 4L;
                i += cnt;
            }
            l[3] += k;
        }

        /** Checks that every row was written (once), flushes, and moves the file into place. */
        public void commit() throws IOException {
            for (var e : layout.entrySet())
                if (e.getValue()[3] != e.getValue()[2])
                    throw new IllegalStateException("tensor '" + e.getKey() + "': " + e.getValue()[3] + " of " + e.getValue()[2] + " rows written");
            ch.force(true);
            ch.close();
            AtomicWrite.moveIntoPlace(tmp, target);
            committed = true;
        }

        @Override
        public void close() throws IOException {
            if (committed) return;
            ch.close();
            Files.deleteIfExists(tmp);
        }
    }

    // ================================================================ sources

    /** Random-access bytes: a file channel, or an array for in-memory parsing and fuzzing. */
    interface Source {
        String name();

        long size() throws IOException;

        /** Fills {@code dst} from position {@code pos}; running out of bytes is a CorruptFileException. */
        void read(long pos, ByteBuffer dst) throws IOException;
    }

    private record BytesSource(byte[] bytes, String name) implements Source {
        @Override public long size() { return bytes.length; }

        @Override public void read(long pos, ByteBuffer dst) throws CorruptFileException {
            int len = dst.remaining();
            if (pos < 0 || pos + len > bytes.length)
                throw new CorruptFileException(name, "read of " + len + " bytes at " + pos + " runs past the end (" + bytes.length + " bytes)");
            dst.put(bytes, (int) pos, len);
        }
    }

    private record FileSource(FileChannel ch, String name) implements Source {
        @Override public long size() throws IOException { return ch.size(); }

        @Override public void read(long pos, ByteBuffer dst) throws IOException {
            while (dst.hasRemaining()) {
                int r = ch.read(dst, pos);
                if (r < 0)
                    throw new CorruptFileException(name, "the file ended at byte " + pos + " while reading it; was it truncated"
                            + " by another process during the read?");
                pos += r;
            }
        }
    }
}
