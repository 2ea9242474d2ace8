// Saving and loading BiFlow backward models as safetensors files that carry their config and the noise level they were trained at.
package dev.biflow.flow.inverse;

import dev.biflow.engine.Rng;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.io.Safetensors;
import dev.biflow.flow.model.Checkpoints;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * The layout of {@link Checkpoints}: G's state dict by name (prior_var included), its
 * {@link BackwardConfig} as JSON under metadata {@code config}, {@code kind = biflow}, and from the
 * trainer {@code sigma} (the training noise, needed for score denoising), {@code forward_config}
 * (F's config, to check that G is paired with the flow it inverts) and {@code step}; optionally
 * {@code guidance_w}, the guidance scale G samples best at, picked by a sweep on held-out noise
 * (`biflow eval --w-sweep`, recorded by `biflow export --guidance-w`).
 */
public final class BackwardCheckpoints {
    private BackwardCheckpoints() {}

    public static final String KIND = "biflow";
    public static final String SIGMA_KEY = "sigma";
    public static final String FORWARD_CONFIG_KEY = "forward_config";
    public static final String GUIDANCE_KEY = "guidance_w";

    /** A loaded model and the file's metadata. */
    public record Loaded(BiFlowModel model, Map<String, String> metadata) {
        /** The training noise sigma, or NaN when the file does not say. */
        public float sigma() {
            String s = metadata.get(SIGMA_KEY);
            return s == null ? Float.NaN : Float.parseFloat(s);
        }

        /** The recorded guidance scale G samples best at, or NaN when the file does not say. */
        public float guidance() {
            String s = metadata.get(GUIDANCE_KEY);
            return s == null ? Float.NaN : Float.parseFloat(s);
        }

        /** F's config JSON as recorded at training time, or null. */
        public String forwardConfig() { return metadata.get(FORWARD_CONFIG_KEY); }
    }

    /** Writes G's state dict, config and extra metadata, atomically. */
    public static void save(BiFlowModel model, Path path, Map<String, String> extra) throws IOException {
        Safetensors.write(path, model.stateDict(), metadata(model, extra));
    }

    /** The bytes {@link #save} writes. */
    public static byte[] toBytes(BiFlowModel model, Map<String, String> extra) {
        return Safetensors.toBytes(model.stateDict(), metadata(model, extra));
    }

    private static Map<String, String> metadata(BiFlowModel model, Map<String, String> extra) {
        Map<String, String> meta = new LinkedHashMap<>();
        if (extra != null) meta.putAll(extra);
        meta.put(Checkpoints.CONFIG_KEY, model.config.toJson());
        meta.put(Checkpoints.KIND_KEY, KIND);
        return meta;
    }

    /** Loads a backward model written by {@link #save}. */
    public static BiFlowModel load(Path path) throws IOException { return read(path).model(); }

    /** Loads a backward model and its metadata. Errors name the file and what is wrong with it. */
    public static Loaded read(Path path) throws IOException {
        if (!Files.exists(path))
            throw new IOException("backward checkpoint " + path + " does not exist; train one with BackwardTrainer (biflow train-backward) or check the path");
        Safetensors.Header h = Safetensors.readHeader(path);
        String kind = h.metadata().get(Checkpoints.KIND_KEY);
        if (!KIND.equals(kind))
            throw new IllegalArgumentException(path + " holds " + (kind == null ? "a model of unknown kind" : "a '" + kind + "' model")
                    + ", not a BiFlow backward model");
        String json = h.metadata().get(Checkpoints.CONFIG_KEY);
        if (json == null) throw new IllegalArgumentException(path + " has no 'config' metadata; it was not written by BackwardCheckpoints.save");
        BackwardConfig cfg = BackwardConfig.fromJson(json);
        Checkpoints.checkFits(path, h, "BiFlow backward model", cfg.toJson(), cfg.minStateValues());
        Safetensors.Contents c = Safetensors.read(path);
        BiFlowModel model = new BiFlowModel(cfg, new Rng(0));
        Map<String, Tensor> state = new LinkedHashMap<>(c.tensors());
        try {
            model.loadStateDict(state, true);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException(path + " does not fit the backward config " + cfg.toJson() + ": " + e.getMessage(), e);
        }
        Checkpoints.checkFinite(path, state);
        String gw = c.metadata().get(GUIDANCE_KEY);
        if (gw != null) {
            float w;
            try {
                w = Float.parseFloat(gw);
            } catch (NumberFormatException e) {
                throw new IllegalArgumentException(path + ": metadata " + GUIDANCE_KEY + " = '" + gw + "' is not a number; rewrite it with biflow export --guidance-w W");
            }
            try {
                model.checkGuidance(w, new int[1]);
            } catch (IllegalArgumentException e) {
                throw new IllegalArgumentException(path + ": metadata " + GUIDANCE_KEY + " = " + gw + " does not fit the model: " + e.getMessage(), e);
            }
        }
        return new Loaded(model, java.util.Collections.unmodifiableMap(new LinkedHashMap<>(c.metadata())));
    }
}
