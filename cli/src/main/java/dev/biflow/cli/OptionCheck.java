// Checks every numeric option of the command about to run: finite, and inside its @Range.
package dev.biflow.cli;

import picocli.CommandLine;
import picocli.CommandLine.Model.OptionSpec;
import picocli.CommandLine.ParseResult;

import java.lang.reflect.Field;
import java.util.Locale;

/**
 * Runs before a command's {@code call()}: picocli parses "NaN", "Infinity" and "-5" into numeric
 * options happily, and a command would then train, sample or evaluate with them. Every float or
 * double option must be finite, and an option with a {@link Range} must lie in it; values from a
 * config file are checked alike (they are the options' defaults). The error is one line, e.g.
 * {@code --sigma NaN is not a number: it must be a finite number >= 0}.
 */
final class OptionCheck {
    private OptionCheck() {}

    /** The execution strategy of {@link Main}: check, then run the last subcommand as picocli does. */
    static int execute(ParseResult pr) {
        ParseResult leaf = pr;
        while (leaf.subcommand() != null) leaf = leaf.subcommand();
        if (!leaf.isUsageHelpRequested() && !leaf.isVersionHelpRequested()) {
            String problem = check(leaf.commandSpec());
            if (problem != null)
                throw new CommandLine.ExecutionException(leaf.commandSpec().commandLine(), problem, new IllegalArgumentException(problem));
        }
        return new CommandLine.RunLast().execute(pr);
    }

    /** Null when every numeric option of the command is valid, else the error. */
    static String check(CommandLine.Model.CommandSpec spec) {
        for (OptionSpec o : spec.options()) {
            Object v = o.getValue();
            if (!(v instanceof Number n)) continue;
            Range r = o.userObject() instanceof Field f ? f.getAnnotation(Range.class) : null;
            String name = o.longestName();
            boolean floating = v instanceof Double || v instanceof Float;
            double d = n.doubleValue();
            String shown = floating ? (v instanceof Float ? Float.toString(n.floatValue()) : Double.toString(d)) : Long.toString(n.longValue());
            if (floating && !Double.isFinite(d))
                return name + " " + shown + " is not " + (Double.isNaN(d) ? "a number" : "finite") + ": it must be a finite number" + range(r, true);
            if (r == null) continue;
            boolean ok = (r.minOpen() ? d > r.min() : d >= r.min()) && (r.maxOpen() ? d < r.max() : d <= r.max());
            if (!ok) return name + " " + shown + " is out of range: it must be" + (floating ? " a number" : " a whole number") + range(r, false);
        }
        return null;
    }

    private static String range(Range r, boolean leadingSpace) {
        if (r == null) return "";
        boolean lo = r.min() != Double.NEGATIVE_INFINITY, hi = r.max() != Double.POSITIVE_INFINITY;
        if (lo && hi) return " in " + (r.minOpen() ? "(" : "[") + num(r.min()) + ", " + num(r.max()) + (r.maxOpen() ? ")" : "]");
        if (lo) return (r.minOpen() ? " > " : " >= ") + num(r.min());
        if (hi) return (r.maxOpen() ? " < " : " <= ") + num(r.max());
        return "";
    }

    private static String num(double d) {
        return d == Math.rint(d) && Math.abs(d) < 1e15 ? Long.toString((long) d) : String.format(Locale.ROOT, "%s", d);
    }
}
