# Sourced by ./biflow, ./setup.sh and ./test.sh: exports JAVA_HOME pointing at a JDK >= 25, or explains what to install.
_biflow_jdk_ok() { # $1 = a JDK home; true when its java is version >= 25 and it has javac
  [ -x "$1/bin/java" ] && [ -x "$1/bin/javac" ] || return 1
  local v
  v=$("$1/bin/java" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')
  [ -n "$v" ] && [ "${v%%.*}" -ge 25 ] 2>/dev/null
}
if [ -n "${JAVA_HOME:-}" ] && _biflow_jdk_ok "$JAVA_HOME"; then
  :
else
  _found=""
  for d in /usr/lib/jvm/temurin-25-jdk-amd64 /usr/lib/jvm/*25* /usr/lib/jvm/*2[6-9]* /usr/lib/jvm/*; do
    if _biflow_jdk_ok "$d"; then _found="$d"; break; fi
  done
  if [ -z "$_found" ]; then
    echo "biflow: no JDK 25 or newer found (JAVA_HOME=${JAVA_HOME:-unset}; looked in /usr/lib/jvm)." >&2
    echo "biflow: install one (e.g. Eclipse Temurin 25 into /usr/lib/jvm/temurin-25-jdk-amd64) or set JAVA_HOME to it." >&2
    return 1 2>/dev/null || exit 1
  fi
  export JAVA_HOME="$_found"
fi
export PATH="$JAVA_HOME/bin:$PATH"
