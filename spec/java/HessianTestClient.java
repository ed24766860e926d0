// A Java Hessian client for springrun's interop specs: Caucho's
// HessianProxyFactory (4.0.38). Usage: HessianTestClient URL [h2]; with h2
// the calls are Hessian 2 (setHessian2Request). Prints one line per call.
import com.caucho.hessian.client.HessianProxyFactory;

public class HessianTestClient {
  public static void main(String[] args) throws Exception {
    HessianProxyFactory f = new HessianProxyFactory();
    if (args.length > 1 && args[1].equals("h2")) f.setHessian2Request(true);
    HessianTestServer.TestService s =
        (HessianTestServer.TestService) f.create(HessianTestServer.TestService.class, args[0]);
    System.out.println("add " + s.add(2, 3));
    System.out.println("echo " + s.echo("h\u00e9llo \uD83D\uDE00"));
    HessianTestServer.Bean b = s.makeBean("bean", 7);
    System.out.println("bean " + b.name + " " + b.count + " " + (b.self == b) + " " + (b.items.get(0) == b));
    try {
      s.fail("boom");
    } catch (IllegalStateException e) {
      System.out.println("fault " + e.getClass().getName() + " " + e.getMessage());
    }
  }
}
