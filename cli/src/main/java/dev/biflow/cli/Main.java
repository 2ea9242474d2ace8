// The biflow command: entry point and the subcommand list.
package dev.biflow.cli;

import picocli.CommandLine;
import picocli.CommandLine.Command;

/** {@code biflow <command>}: every subcommand prints its defaults and examples with --help. */
@Command(name = "biflow", mixinStandardHelpOptions = true, version = "biflow 0.1.0",
        description = "Train, sample and benchmark normalizing-flow image generators (TARFlow / iTARFlow, BiFlow) in pure Java.",
        subcommands = {TrainForwardCommand.class, TrainBackwardCommand.class, TrainFeaturesCommand.class, EvalCommand.class, SampleCommand.class, FlowIoCommand.class,
                InfoCommand.class, DevicesCommand.class, ReportCommand.class, BenchCommand.class, AblateCommand.class, DemoCommand.class, ExportCommand.class, CommandLine.HelpCommand.class})
public final class Main implements Runnable {
    @Override
    public void run() { new CommandLine(this).usage(System.out); }

    /**
     * A raw file-system error of the JDK says only a path ("error: /x/y"): this names the file (and
     * the other one, for a move), and the reason in words.
     */
    static String fileSystemError(java.nio.file.FileSystemException e) {
        String what = e instanceof java.nio.file.NoSuchFileException ? "no such file or directory"
                : e instanceof java.nio.file.AccessDeniedException ? "permission denied"
                : e instanceof java.nio.file.FileAlreadyExistsException ? "a file is in the way"
                : e instanceof java.nio.file.NotDirectoryException ? "not a directory"
                : e instanceof java.nio.file.DirectoryNotEmptyException ? "the directory is not empty"
                : e.getReason() != null ? e.getReason() : e.getClass().getSimpleName();
        return "cannot access " + e.getFile() + (e.getOtherFile() != null ? " (or " + e.getOtherFile() + ")" : "") + ": " + what;
    }

    public static void main(String[] args) { System.exit(execute(args)); }

    /**
     * A subcommand another module adds when its jar is on the class path, found with
     * {@link java.util.ServiceLoader} (META-INF/services/dev.biflow.cli.Main$Plugin): the spark module's
     * {@code biflow spark}, so that this module, and whoever runs biflow without Spark, never loads it.
     */
    public interface Plugin {
        /** A picocli command object (annotated with {@code @Command}). */
        Object command();
    }

    /**
     * The message on one line: control characters from file contents or arguments (a key with a
     * carriage return, say) are shown escaped (\\r, \\n, \\u0007), not printed.
     */
    static String oneLine(String msg) {
        StringBuilder sb = new StringBuilder(msg.length());
        for (int i = 0; i < msg.length(); i++) {
            char ch = msg.charAt(i);
            if (ch == '\n') sb.append("\\n");
            else if (ch == '\r') sb.append("\\r");
            else if (ch == '\t') sb.append("\\t");
            else if (Character.isISOControl(ch) || ch == '\u2028' || ch == '\u2029' || ch == '\u0085') sb.append(String.format("\\u%04x", (int) ch));
            else sb.append(ch);
        }
        return sb.toString();
    }

    /**
     * The command line as {@link #execute} runs it: numeric options checked before a command runs,
     * and no {@code @file} expansion (picocli's default: an argument {@code @x} read the file x as
     * more arguments, so {@code @/dev/zero} never ended and {@code @.} failed with a stack trace).
     */
    static CommandLine commandLine() {
        CommandLine cl = new CommandLine(new Main());
        for (Plugin p : java.util.ServiceLoader.load(Plugin.class)) cl.addSubcommand(p.command());
        cl.setExpandAtFiles(false);
        cl.setExecutionStrategy(OptionCheck::execute); // every numeric option finite and in its range, before the command runs
        return cl;
    }

    /** Runs the command line; user errors print one clear message and give a non-zero exit code. */
    public static int execute(String... args) { return execute(null, args); }

    /**
     * As {@link #execute(String...)}, and also hands the exception that ended the command, if any,
     * to onError: for a command that runs other commands and records why one failed (ablate).
     */
    static int execute(java.util.function.Consumer<Exception> onError, String... args) {
        dev.biflow.flow.model.Checkpoints.setAllowNonFinite(false); // only a command's own --allow-nonfinite turns the check off
        CommandLine cl = commandLine();
        cl.setExecutionExceptionHandler((ex, cmd, parsed) -> {
            if (onError != null) onError.accept(ex);
            if (outOfMemory(ex) != null) {
                cmd.getErr().println(outOfMemoryLine(cmd.getCommandName()));
                return 3;
            }
            String msg = ex instanceof java.nio.file.FileSystemException fse ? fileSystemError(fse)
                    : ex.getMessage() == null ? ex.toString() : ex.getMessage();
            cmd.getErr().println(cmd.getCommandSpec().qualifiedName() + ": error: " + oneLine(msg)); // "biflow spark sample: error: ..." for a nested command
            if (System.getenv("BIFLOW_DEBUG") != null) ex.printStackTrace(cmd.getErr());
            return ex instanceof IllegalArgumentException || ex instanceof java.io.IOException
                    || ex instanceof dev.biflow.flow.train.TrainingDivergedException ? 2 : 1;
        });
        if (args.length > 0 && args[0].equals("spark") && !cl.getSubcommands().containsKey("spark")) {
            System.err.println("biflow spark: error: the spark module is not on the class path: run it as ./biflow spark ... from a checkout"
                    + " (which builds spark/), or spark-submit the shaded jar (docs/SCALING.md)");
            return 2;
        }
        // --config FILE / --resume DIR: the settings file becomes the subcommand's default values, before parsing
        try {
            int rc = ConfigFile.install(cl, args);
            return rc != 0 ? rc : cl.execute(args);
        } catch (OutOfMemoryError e) {
            String sub = java.util.Arrays.stream(args).filter(cl.getSubcommands()::containsKey).findFirst().orElse("biflow");
            System.err.println(outOfMemoryLine(sub));
            return 3;
        }
    }

    /** The OutOfMemoryError in ex's cause chain (a worker thread's error arrives wrapped), or null. */
    static OutOfMemoryError outOfMemory(Throwable ex) {
        for (Throwable t = ex; t != null; t = t.getCause()) if (t instanceof OutOfMemoryError o) return o;
        return null;
    }

    /** Per command, the options that make it need less memory. */
    private static final java.util.Map<String, String> SMALLER = java.util.Map.ofEntries(
            java.util.Map.entry("sample", "a smaller --batch (images sampled together)"),
            java.util.Map.entry("eval", "a smaller --batch or --samples"),
            java.util.Map.entry("flow", "a smaller --batch (images run together)"),
            java.util.Map.entry("train-forward", "a smaller --batch"),
            java.util.Map.entry("train-backward", "a smaller --batch"),
            java.util.Map.entry("train-features", "a smaller --batch"),
            java.util.Map.entry("bench", "a smaller --batch"),
            java.util.Map.entry("ablate", "a smaller batch or samples in the grid file"));

    /** One line for an OutOfMemoryError: the heap it had, and what would fix it. */
    static String outOfMemoryLine(String command) {
        long max = Runtime.getRuntime().maxMemory();
        long gb = Math.max(2, 2 * ((max + (1L << 30) - 1) >> 30));
        String smaller = SMALLER.get(command);
        return "biflow " + command + ": error: out of memory: the Java heap (" + dev.biflow.engine.io.MemoryBudget.size(max)
                + ") is too small for this; run with more, e.g. BIFLOW_JAVA_OPTS=-Xmx" + gb + "g ./biflow " + command + " ..."
                + (smaller != null ? ", or use " + smaller : "");
    }
}
