// Caucho's HessianProxyFactory (4.0.38) calling a springrun
// HessianServiceExporter (spec/interop_hessian_remoting_spec.lua): every
// Hessian type goes to the Lua service's echo and must come back equal,
// describe reports how Lua received it, a bean with back-references comes
// from Lua, and Lua errors arrive as Java exceptions.
// Usage: HessianLuaClient URL h1|h2 [bench N]; prints one line per check.
// With "bench N": N add() calls then N/20 echo() calls of a list of 1,000
// beans (after a warm-up), printing the calls per second of each.
import com.caucho.hessian.client.HessianProxyFactory;
import java.lang.reflect.Array;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Date;
import java.util.HashMap;
import java.util.LinkedList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

public class HessianLuaClient {
  public interface LuaService extends HessianTestServer.TestService {
    String nope();
  }

  static boolean same(Object a, Object b) {
    if (a == null || b == null) return a == b;
    if (a.getClass().isArray() && b.getClass().isArray()) {
      int n = Array.getLength(a);
      if (n != Array.getLength(b)) return false;
      for (int i = 0; i < n; i++) if (!same(Array.get(a, i), Array.get(b, i))) return false;
      return true;
    }
    if (a instanceof List && b instanceof List) {
      List<?> x = (List<?>) a, y = (List<?>) b;
      if (x.size() != y.size()) return false;
      for (int i = 0; i < x.size(); i++) if (!same(x.get(i), y.get(i))) return false;
      return true;
    }
    if (a instanceof Map && b instanceof Map) {
      Map<?, ?> x = (Map<?, ?>) a, y = (Map<?, ?>) b;
      if (x.size() != y.size()) return false;
      for (Map.Entry<?, ?> e : x.entrySet()) if (!same(e.getValue(), y.get(e.getKey()))) return false;
      return true;
    }
    return a.equals(b);
  }

  static String big(String unit, int n) {
    StringBuilder sb = new StringBuilder();
    for (int i = 0; i < n; i++) sb.append(unit);
    return sb.toString();
  }

  static HessianTestServer.Bean bean(String name, int count) {
    HessianTestServer.Bean b = new HessianTestServer.Bean();
    b.name = name;
    b.count = count;
    b.self = b;
    b.items = new ArrayList<>();
    b.items.add(b);
    b.items.add("y");
    return b;
  }

  public static void main(String[] args) throws Exception {
    HessianProxyFactory f = new HessianProxyFactory();
    if (args[1].equals("h2")) f.setHessian2Request(true);
    LuaService s = (LuaService) f.create(LuaService.class, args[0]);
    if (args.length > 3 && args[2].equals("bench")) {
      bench(s, Integer.parseInt(args[3]));
      return;
    }
    System.out.println("add " + s.add(2, 3));
    Object[][] values = {
      {"null", null}, {"true", true}, {"false", false},
      {"int0", 0}, {"int-16", -16}, {"int47", 47}, {"int2047", 2047}, {"int262143", 262143},
      {"intmax", Integer.MAX_VALUE}, {"intmin", Integer.MIN_VALUE},
      {"long", 1L << 40}, {"longmax", Long.MAX_VALUE}, {"longmin", Long.MIN_VALUE},
      {"double0", 0.0}, {"double1", 1.0}, {"double1.5", 1.5}, {"double0.1", 0.1},
      {"double1e300", 1e300}, {"double-2.25", -2.25},
      {"empty", ""}, {"utf8", "h\u00e9llo \u20ac \uD83D\uDE00"}, {"long70000", big("x", 70000)},
      {"emoji20000", big("\uD83D\uDE00", 20000)},
      {"binary0", new byte[0]}, {"binary65536", new byte[65536]}, {"binary200000", new byte[200000]},
      {"date", new Date(1577836800001L)}, {"dateminute", new Date(1577836800000L)},
      {"arraylist", new ArrayList<Object>(Arrays.asList(1, "two", 3.5, null, true))},
      {"intarray", new int[] {1, 2, 3}}, {"stringarray", new String[] {"a", "b"}},
      {"linkedlist", new LinkedList<Object>(Arrays.asList(1, 2))},
    };
    ((byte[]) values[24][1])[65535] = 7;
    for (Object[] v : values) {
      Object back = s.echo(v[1]);
      String cls = back == null ? "null" : back.getClass().getName();
      System.out.println("echo " + v[0] + " " + (same(v[1], back) ? "ok" : "BAD") + " " + cls
          + " | " + s.describe(v[1]));
    }
    HashMap<String, Object> hm = new HashMap<>();
    hm.put("a", 1);
    hm.put("b", Arrays.asList(1, 2));
    Object hmb = s.echo(hm);
    System.out.println("echo hashmap " + (same(hm, hmb) ? "ok" : "BAD") + " " + hmb.getClass().getName()
        + " | " + s.describe(hm));
    TreeMap<String, Object> tm = new TreeMap<>();
    tm.put("k", "v");
    Object tmb = s.echo(tm);
    System.out.println("echo treemap " + (same(tm, tmb) ? "ok" : "BAD") + " " + tmb.getClass().getName()
        + " | " + s.describe(tm));
    System.out.println("long " + s.echoLong(1L << 40) + " double " + s.echoDouble(3.25)
        + " date " + s.echoDate(new Date(0)).getTime() + " binary " + s.echoBinary(new byte[] {1, 2}).length);
    HessianTestServer.Bean b = bean("java", 3);
    HessianTestServer.Bean bb = (HessianTestServer.Bean) s.echo(b);
    System.out.println("echo bean " + bb.name + " " + bb.count + " " + (bb.self == bb) + " "
        + (bb.items.get(0) == bb) + " | " + s.describe(b));
    List<Object> shared = new ArrayList<>();
    shared.add(1);
    List<Object> pair = new ArrayList<>();
    pair.add(shared);
    pair.add(shared);
    List<?> pb = (List<?>) s.echo(pair);
    System.out.println("echo shared " + (pb.get(0) == pb.get(1)));
    HessianTestServer.Bean m = s.makeBean("lua", 7);
    System.out.println("bean " + m.name + " " + m.count + " " + (m.self == m) + " " + (m.items.get(0) == m)
        + " " + m.items.get(1));
    try {
      s.fail("boom");
    } catch (IllegalStateException e) {
      System.out.println("fault " + e.getClass().getName() + " " + e.getMessage());
    }
    try {
      s.fail("plain");
    } catch (RuntimeException e) {
      System.out.println("fault " + e.getClass().getName() + " " + e.getMessage().replaceAll("^.*: ", ""));
    }
    try {
      s.nope();
    } catch (Throwable e) {
      Throwable c = e.getCause() != null ? e.getCause() : e;
      System.out.println("nope " + c.getClass().getName() + " " + c.getMessage());
    }
  }

  static void bench(LuaService s, int n) {
    for (int i = 0; i < 2000; i++) s.add(i, 1); // JIT warm-up, both servers alike
    long t0 = System.nanoTime();
    for (int i = 0; i < n; i++) s.add(i, 1);
    long t1 = System.nanoTime();
    System.out.printf("small %.0f%n", n / ((t1 - t0) / 1e9));
    List<Object> beans = new ArrayList<>();
    for (int i = 0; i < 1000; i++) {
      HessianTestServer.Bean b = new HessianTestServer.Bean();
      b.name = "bean" + i;
      b.count = i;
      beans.add(b);
    }
    for (int i = 0; i < 50; i++) s.echo(beans);
    int m = Math.max(1, n / 20);
    t0 = System.nanoTime();
    for (int i = 0; i < m; i++) s.echo(beans);
    t1 = System.nanoTime();
    System.out.printf("beans %.0f%n", m / ((t1 - t0) / 1e9));
  }
}
