// JMeter213Launcher starts Debian's JMeter 2.13 (`apt-get install jmeter`) so that it can load
// test plans at all.
//
// Debian ships JMeter 2.13 with a much newer XStream (1.4.2x) than 2.13 was built against. Since
// XStream 1.4.18 an XStream instance denies every type that is not explicitly allowed, and 2.13's
// SaveService allows none, so loading ANY .jmx fails with
// "ForbiddenClassException ... ScriptWrapper". This launcher grants AnyTypePermission to
// SaveService's two XStream instances (JMXSAVER reads .jmx plans, JTLSAVER reads and writes XML
// results), then hands over to JMeter's own entry point (NewDriver) with the arguments unchanged.
// The plans loaded this way are our own files, so allowing every type is no wider than what 2.13
// did with the XStream it was built for.
//
// SaveService reads JMeter's properties while it initialises (and initialises
// SampleSaveConfiguration, which fixes the .jtl columns), so the properties are loaded first, as
// JMeter itself would: bin/jmeter.properties, bin/user.properties, then every -Jname=value
// argument. (Write -J properties as one argument, -Jname=value; -q/-p files are read by JMeter
// later, too late for the .jtl settings.)
//
// jmeter/jmeter.sh compiles and uses this launcher when the installed JMeter is 2.x:
//
//	javac -d BUILD jmeter/launcher/JMeter213Launcher.java
//	java -Djmeter.home=/usr/share/jmeter \
//	    -cp 'BUILD:/usr/share/jmeter/bin/ApacheJMeter.jar:/usr/share/jmeter/lib/*:/usr/share/jmeter/lib/ext/*' \
//	    JMeter213Launcher -n -t plan.jmx -l results.jtl
//
// It uses reflection only, so it compiles against the JDK alone.
import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.lang.reflect.Field;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.util.Properties;

public final class JMeter213Launcher {
    private JMeter213Launcher() {}

    public static void main(String[] args) throws Throwable {
        String home = System.getProperty("jmeter.home");
        if (home == null || home.isEmpty()) {
            home = "/usr/share/jmeter";
            System.setProperty("jmeter.home", home);
        }
        ClassLoader cl = JMeter213Launcher.class.getClassLoader();

        // JMeter's properties, as JMeter.initializeProperties would set them up.
        Class<?> utils = Class.forName("org.apache.jmeter.util.JMeterUtils", true, cl);
        utils.getMethod("setJMeterHome", String.class).invoke(null, home);
        utils.getMethod("loadJMeterProperties", String.class).invoke(null, home + "/bin/jmeter.properties");
        Properties props = (Properties) utils.getMethod("getJMeterProperties").invoke(null);
        try (InputStream in = new FileInputStream(home + "/bin/user.properties")) {
            props.load(in);
        } catch (IOException ignored) {
            // optional, as for JMeter
        }
        for (String a : args) {
            int eq = a.indexOf('=');
            if (a.startsWith("-J") && eq > 2) {
                props.setProperty(a.substring(2, eq), a.substring(eq + 1));
            }
        }

        // SaveService logs its start-up at INFO before JMeter has set up logging (to the console).
        try {
            Class.forName("org.apache.jorphan.logging.LoggingManager", true, cl)
                    .getMethod("setPriority", String.class, String.class).invoke(null, "WARN", "jmeter.save");
        } catch (ReflectiveOperationException ignored) {
            // cosmetic only
        }

        // Allow every type on SaveService's XStream instances.
        Class<?> saveService = Class.forName("org.apache.jmeter.save.SaveService", true, cl);
        Class<?> typePermission = Class.forName("com.thoughtworks.xstream.security.TypePermission", true, cl);
        Object any = Class.forName("com.thoughtworks.xstream.security.AnyTypePermission", true, cl)
                .getField("ANY").get(null);
        for (String name : new String[] {"JMXSAVER", "JTLSAVER"}) {
            Field f = saveService.getDeclaredField(name);
            f.setAccessible(true);
            Object xstream = f.get(null);
            Method add = xstream.getClass().getMethod("addPermission", typePermission);
            add.invoke(xstream, any);
        }

        try {
            Class.forName("org.apache.jmeter.NewDriver", true, cl).getMethod("main", String[].class)
                    .invoke(null, (Object) args);
        } catch (InvocationTargetException e) {
            throw e.getCause();
        }
    }
}
