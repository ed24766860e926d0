// A Java Hessian service for springrun's interop specs: Caucho's
// HessianSkeleton (4.0.38) under the JDK's com.sun.net.httpserver, as a
// servlet container would run it. Usage: HessianTestServer PORT; serves
// /test on 127.0.0.1:PORT until killed. A request the skeleton cannot read
// gets HTTP 500 with the exception as text (as HessianServlet does).
import com.caucho.hessian.server.HessianSkeleton;
import com.sun.net.httpserver.HttpServer;
import java.io.ByteArrayOutputStream;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.Serializable;
import java.net.InetSocketAddress;
import java.util.ArrayList;
import java.util.Date;
import java.util.List;

public class HessianTestServer {
  public static class Bean implements Serializable {
    public String name;
    public int count;
    public Bean self;
    public List<Object> items;
  }

  public interface TestService {
    Object echo(Object o);
    int add(int a, int b);
    long echoLong(long v);
    double echoDouble(double v);
    byte[] echoBinary(byte[] v);
    Date echoDate(Date v);
    Bean makeBean(String name, int count);
    String describe(Object o);
    String fail(String message);
  }

  public static class Impl implements TestService {
    public Object echo(Object o) { return o; }
    public int add(int a, int b) { return a + b; }
    public long echoLong(long v) { return v; }
    public double echoDouble(double v) { return v; }
    public byte[] echoBinary(byte[] v) { return v; }
    public Date echoDate(Date v) { return v; }
    public Bean makeBean(String name, int count) {
      Bean b = new Bean();
      b.name = name;
      b.count = count;
      b.self = b;
      b.items = new ArrayList<>();
      b.items.add(b);
      b.items.add("x");
      return b;
    }
    // The Java class of what arrived, so specs see how Lua values land in Java.
    public String describe(Object o) {
      if (o == null) return "null";
      String s = o.getClass().getName();
      if (o instanceof Bean) {
        Bean b = (Bean) o;
        s += "(" + b.name + "," + b.count + "," + (b.self == b) + ")";
      }
      return s;
    }
    public String fail(String message) { throw new IllegalStateException(message); }
  }

  public static void main(String[] args) throws Exception {
    int port = Integer.parseInt(args[0]);
    HessianSkeleton skeleton = new HessianSkeleton(new Impl(), TestService.class);
    HttpServer server = HttpServer.create(new InetSocketAddress("127.0.0.1", port), 16);
    server.createContext("/test", ex -> {
      ByteArrayOutputStream out = new ByteArrayOutputStream();
      int status = 200;
      try (InputStream in = ex.getRequestBody()) {
        skeleton.invoke(in, out);
      } catch (Throwable e) {
        status = 500;
        out.reset();
        out.write(e.toString().getBytes("UTF-8"));
      }
      ex.getResponseHeaders().set("Content-Type", status == 200 ? "x-application/hessian" : "text/plain");
      ex.sendResponseHeaders(status, out.size());
      try (OutputStream os = ex.getResponseBody()) {
        out.writeTo(os);
      }
    });
    server.start();
    System.out.println("listening " + port);
  }
}
